"""Pictures are written, have the expected size, and show the drawn people (not blank)."""
import numpy as np
import pytest
from PIL import Image

from mrcnn_kp import constants
from mrcnn_kp.inference import visualize
from mrcnn_kp.inference.coco_eval import ground_truth_as_detections, load_coco
from mrcnn_kp.inference.predictor import read_image


def person(height=120, width=160):
    masks = np.zeros((height, width, 1), bool)
    masks[20:110, 50:100, 0] = True
    keypoints = np.zeros((1, 17, 3), np.float32)
    keypoints[0, :, 0] = np.linspace(55, 95, 17)
    keypoints[0, :, 1] = np.linspace(25, 105, 17)
    keypoints[0, :, 2] = np.linspace(0.1, 1.0, 17)
    return {"rois": np.array([[50, 20, 100, 110]], np.float32), "class_ids": np.array([1]),
            "scores": np.array([0.87], np.float32), "masks": masks, "keypoints": keypoints}


def empty(height=120, width=160):
    return {"rois": np.zeros((0, 4), np.float32), "class_ids": np.zeros(0, int),
            "scores": np.zeros(0, np.float32), "masks": np.zeros((height, width, 0), bool),
            "keypoints": np.zeros((0, 17, 3), np.float32)}


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(np.float32)


def test_limb_colors_one_per_limb_left_and_right_differ():
    colors = visualize.limb_colors()
    assert len(colors) == len(constants.SKELETON) == 19
    left_arm = constants.SKELETON.index((5, 7))
    right_arm = constants.SKELETON.index((6, 8))
    assert colors[left_arm] != colors[right_arm]


def test_display_instances_draws_people_on_the_image(tmp_path):
    image = np.full((120, 160, 3), 128, np.uint8)
    drawn = tmp_path / "drawn.png"
    blank = tmp_path / "blank.png"
    fig = visualize.display_instances(image, person(), figsize=(4, 3), path=drawn)
    visualize.display_instances(image, empty(), figsize=(4, 3), path=blank)
    assert fig.get_size_inches().tolist() == [4.0, 3.0]
    a, b = pixels(drawn), pixels(blank)
    assert a.shape == b.shape == (300, 400, 3)  # figsize x 100 dpi
    # the people add colour: more distinct colours and more variance than the bare image
    assert a.var() > b.var() + 100
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 50
    assert np.abs(a - b).mean() > 2


def test_draw_side_by_side_on_a_real_coco_image(coco_mini, tmp_path):
    ann, images = coco_mini
    coco = load_coco(ann)
    image_id = coco.getImgIds()[0]
    image = read_image(images / coco.imgs[image_id]["file_name"])
    gt = ground_truth_as_detections(coco, image_id)
    pred = {k: v.copy() for k, v in gt.items()}
    pred["keypoints"][..., :2] += 6.0
    pred["keypoints"][..., 2] = np.where(gt["keypoints"][..., 2] > 0, 0.7, 0.0)
    path = visualize.draw_side_by_side(image, gt, pred, tmp_path / "pair.png",
                                       figsize=(8, 4))
    out = pixels(path)
    assert out.shape == (400, 800, 3)
    assert out.std() > 20
    # both halves carry the picture (neither panel left empty)
    left, right = out[:, :400], out[:, 400:]
    assert left.std() > 20 and right.std() > 20
    assert np.abs(left - right).mean() > 1  # the predicted skeleton sits elsewhere


def test_joints_scoring_zero_are_not_drawn(tmp_path):
    image = np.full((120, 160, 3), 128, np.uint8)
    unseen = person()
    unseen["keypoints"][..., 2] = 0.0
    seen = person()
    no_people = empty()
    for name, result in (("unseen", unseen), ("seen", seen), ("none", no_people)):
        visualize.display_instances(image, result, figsize=(4, 3), path=tmp_path / f"{name}.png",
                                    show_masks=False, show_boxes=False)
    np.testing.assert_array_equal(pixels(tmp_path / "unseen.png"), pixels(tmp_path / "none.png"))
    assert np.abs(pixels(tmp_path / "seen.png") - pixels(tmp_path / "none.png")).sum() > 0


def test_joint_confidence_of_logits_and_probabilities():
    np.testing.assert_allclose(visualize.joint_confidence([0.0, 2.0, -50.0]),
                               [0.5, 0.880797, 0.0], atol=1e-6)
    np.testing.assert_allclose(visualize.joint_confidence([0.5, 1.7], "probability"), [0.5, 1.0])
    with pytest.raises(ValueError, match="'logit' or 'probability'"):
        visualize.joint_confidence([1.0], "percent")


def test_detections_below_min_score_are_not_drawn(tmp_path):
    image = np.full((120, 160, 3), 128, np.uint8)
    weak = person()  # score 0.87
    for name, result, min_score in (("kept", weak, 0.5), ("dropped", weak, 0.9),
                                    ("none", empty(), 0.0)):
        visualize.display_instances(image, result, figsize=(4, 3), min_score=min_score,
                                    path=tmp_path / f"{name}.png")
    np.testing.assert_array_equal(pixels(tmp_path / "dropped.png"), pixels(tmp_path / "none.png"))
    assert np.abs(pixels(tmp_path / "kept.png") - pixels(tmp_path / "none.png")).sum() > 0


def test_detections_at_least_keeps_every_key_in_step():
    two = person()
    for key in ("rois", "class_ids", "scores", "keypoints"):
        two[key] = np.concatenate([two[key], two[key]])
    two["scores"] = np.array([0.3, 0.8], np.float32)
    two["masks"] = np.concatenate([two["masks"], ~two["masks"]], axis=2)
    kept = visualize.detections_at_least(two, 0.5)
    assert kept["scores"].tolist() == [pytest.approx(0.8)]
    assert kept["rois"].shape == (1, 4) and kept["keypoints"].shape == (1, 17, 3)
    assert kept["class_ids"].tolist() == [1] and kept["masks"].shape == (120, 160, 1)
    np.testing.assert_array_equal(kept["masks"][:, :, 0], ~person()["masks"][:, :, 0])
    assert visualize.detections_at_least(two, 0.0) is two  # no threshold: untouched
    assert len(two["scores"]) == 2  # the caller's result is not modified


def test_visible_skeleton_keeps_limbs_whose_two_joints_are_shown():
    person = np.zeros((constants.NUM_KEYPOINTS, 3), np.float32)
    person[:, 2] = -5.0  # logits: every joint hidden at min_score 0
    left_shoulder, left_elbow, left_wrist = (constants.KEYPOINT_NAMES.index(n) for n in (
        "left_shoulder", "left_elbow", "left_wrist"))
    person[[left_shoulder, left_elbow], 2] = (2.0, 0.0001)
    limbs, joints = visualize.visible_skeleton(person, min_score=0.0)
    assert [(j, round(c, 3)) for j, c in joints] == [(left_shoulder, 0.881), (left_elbow, 0.5)]
    limb = constants.SKELETON.index((left_shoulder, left_elbow))
    assert [(a, b, i) for a, b, i, _ in limbs] == [(left_shoulder, left_elbow, limb)]
    assert limbs[0][3] == pytest.approx(0.5, abs=1e-4)  # the weaker joint's confidence
    assert (left_elbow, left_wrist) in constants.SKELETON  # hidden wrist: that limb is not drawn
