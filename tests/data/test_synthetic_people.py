"""synthetic_people: plausible poses (size, left / right layout, hidden far side) and images
holding zero to four people."""
import numpy as np

from mrcnn_kp.data import synthetic_people


def test_people_have_plausible_size_and_left_right_layout():
    rng = np.random.default_rng(0)
    heights, front, side = [], 0, 0
    for _ in range(40):
        joints, visibility, view = synthetic_people.pose_keypoints(rng, 100.0)
        heights.append(joints[:, 1].max() - joints[:, 1].min())
        if view["side_view"]:
            side += 1
            assert (visibility == 1).sum() == 8  # the far side is hidden behind the body
        else:
            front += 1
            # facing the viewer, the person's left shoulder and hip are on the image's right
            assert joints[5, 0] > joints[6, 0] and joints[11, 0] > joints[12, 0]
            assert joints[1, 0] > joints[2, 0] and (visibility == 2).all()
    assert front >= 10 and side >= 5
    assert 45 < np.median(heights) < 100  # nose to ankle of a 100 px tall person


def test_rendered_image_holds_zero_to_four_people():
    counts = []
    for i in range(30):
        image, people = synthetic_people.render_image(np.random.default_rng([5, i]), image_size=128)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        counts.append(len(people))
        for person in people:
            assert person["mask"].shape == (128, 128)
    assert min(counts) >= 0 and max(counts) <= 4 and len(set(counts)) >= 3
