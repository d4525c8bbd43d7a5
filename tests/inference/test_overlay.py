"""draw_frame: detections drawn into the frame's pixels, coloured by track id."""
import numpy as np

from mrcnn_kp.inference.overlay import draw_frame, track_color


def one_person(score=0.9, track_id=4):
    keypoints = np.zeros((1, 17, 3), np.float32)
    keypoints[0, :, 0] = np.linspace(30, 70, 17)
    keypoints[0, :, 1] = np.linspace(20, 90, 17)
    keypoints[0, :, 2] = 3.0  # logits: confident
    masks = np.zeros((100, 120, 1), bool)
    masks[40:60, 40:60, 0] = True
    return {"rois": np.array([[25, 15, 75, 95]], np.float32),
            "scores": np.array([score], np.float32), "class_ids": np.array([1], np.int32),
            "keypoints": keypoints, "masks": masks, "track_ids": np.array([track_id])}


def test_draws_box_mask_and_skeleton_without_touching_the_input():
    image = np.full((100, 120, 3), 40, np.uint8)
    out = draw_frame(image, one_person())
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (image == 40).all()  # input unchanged
    color = np.array(track_color(4), np.float32)
    # the box edge is the track's colour; the mask centre is blended towards it
    np.testing.assert_array_equal(out[95, 50], color.astype(np.uint8))
    blended = out[55, 45].astype(np.float32)
    assert np.abs(blended - (0.55 * 40 + 0.45 * color)).max() <= 1.5
    assert (out[20, 30] == 255).all()  # a joint: white dot
    assert (out[5:12, 100:118] == 40).all()  # far from the person: untouched


def test_low_scores_are_not_drawn_and_colours_follow_ids():
    image = np.full((100, 120, 3), 40, np.uint8)
    np.testing.assert_array_equal(draw_frame(image, one_person(score=0.3)), image)
    assert track_color(4) == track_color(4) and track_color(4) != track_color(5)
    a = draw_frame(image, one_person(track_id=1))
    b = draw_frame(image, one_person(track_id=2))
    assert not np.array_equal(a[95, 50], b[95, 50])
