"""DetectionTargetLayer on hand-set proposals and ground truth: who is positive, negative or
ignored (crowds), and the class, box, mask and keypoint targets of the positives."""
import numpy as np
import pytest
from keras import ops

from mrcnn_kp.config import TinyConfig
from mrcnn_kp.model.roi_targets import DetectionTargetLayer, keypoint_slots, positive_slots
from mrcnn_kp.ops.boxes import encode_deltas_numpy
from mrcnn_kp.ops.keypoints import encode_keypoints_numpy

PERSON = np.array([20, 20, 60, 100], np.float32)  # x1, y1, x2, y2
CROWD = np.array([90, 0, 128, 30], np.float32)


def ground_truth(config, people=(PERSON,), crowd=None, batch=1):
    g, k, m = config.MAX_GT_INSTANCES, config.NUM_KEYPOINTS, config.MINI_MASK_SHAPE[0]
    ids = np.zeros((batch, g), np.int32)
    boxes = np.zeros((batch, g, 4), np.float32)
    masks = np.zeros((batch, g, m, m), np.float32)
    keypoints = np.zeros((batch, g, k, 3), np.float32)
    rng = np.random.default_rng(0)
    for i, box in enumerate(people):
        ids[0, i], boxes[0, i] = 1, box
        masks[0, i, 4:24, 7:21] = 1.0
        keypoints[0, i, :, 0] = rng.uniform(box[0], box[2], k)
        keypoints[0, i, :, 1] = rng.uniform(box[1], box[3], k)
        keypoints[0, i, :, 2] = 2.0
        keypoints[0, i, 0, 2] = 0.0  # an unlabelled joint is never a target
    if crowd is not None:
        ids[0, len(people)], boxes[0, len(people)] = -1, crowd
    return ids, boxes, masks, keypoints


def proposals(config, rows, batch=1):
    n = config.POST_NMS_ROIS_TRAINING
    out = np.zeros((batch, n, 4), np.float32)
    valid = np.zeros((batch, n), bool)
    for b in range(batch):
        out[b, :len(rows)] = rows
        valid[b, :len(rows)] = True
    return out, valid


def run(layer, props, valid, gt):
    outputs = layer(props, valid, *gt)
    return [np.asarray(ops.convert_to_numpy(x)) for x in outputs]


def rows_of(rois, valid):
    return {tuple(np.round(r, 3)) for r in rois[valid]}


def test_slot_layout():
    config = TinyConfig()
    assert (positive_slots(config), keypoint_slots(config)) == (10, 10)  # int(32 * 0.33)
    assert keypoint_slots(TinyConfig(KEYPOINT_ROIS_PER_IMAGE=4)) == 4


def test_positives_negatives_and_crowd():
    config = TinyConfig()
    positive = [22, 22, 60, 100]  # IoU 0.95 with the person
    far = [80, 80, 120, 120]  # IoU 0: background
    partial = [20, 20, 60, 40]  # IoU 0.25: background
    near_crowd = [95, 0, 125, 25]  # background for the person, but inside a crowd: ignored
    props, valid = proposals(config, [positive, far, partial, near_crowd])
    gt = ground_truth(config, crowd=CROWD)
    rois, roi_valid, class_ids, deltas, masks, kp_targets, kp_weights = run(
        DetectionTargetLayer(config, seed=1), props, valid, gt)
    p = positive_slots(config)
    assert rois.shape == (1, 32, 4) and masks.shape == (1, p, 28, 28)
    assert kp_targets.shape == (1, p, 17) and kp_weights.shape == (1, p, 17)
    # The proposal and the appended gt box are the positives, in the first P slots.
    assert rows_of(rois[0, :p], roi_valid[0, :p]) == {tuple(map(float, positive)),
                                                       tuple(map(float, PERSON))}
    assert rows_of(rois[0, p:], roi_valid[0, p:]) == {tuple(map(float, far)),
                                                       tuple(map(float, partial))}
    np.testing.assert_array_equal(class_ids[0], np.where(roi_valid[0] & (np.arange(32) < p), 1, 0))
    assert not roi_valid[0].sum() - 4  # the crowd-touching proposal is nowhere
    assert np.all(rois[0][~roi_valid[0]] == 0) and np.all(deltas[0, p:] == 0)


def test_targets_of_the_positives():
    config = TinyConfig()
    positive = np.array([22, 22, 60, 100], np.float32)
    props, valid = proposals(config, [positive])
    gt = ground_truth(config)
    rois, roi_valid, _, deltas, masks, kp_targets, kp_weights = run(
        DetectionTargetLayer(config, seed=2), props, valid, gt)
    for slot in np.flatnonzero(roi_valid[0, :positive_slots(config)]):
        roi = rois[0, slot]
        np.testing.assert_allclose(
            deltas[0, slot], encode_deltas_numpy(PERSON, roi, config.BBOX_STD_DEV), atol=1e-5)
        cells, ok = encode_keypoints_numpy(gt[3][0, 0], roi, 56)
        np.testing.assert_array_equal(kp_weights[0, slot], ok)
        np.testing.assert_array_equal(kp_targets[0, slot], np.where(ok, cells, 0))
        assert not ok[0]  # v = 0 is never a target
        if np.allclose(roi, PERSON):  # the gt box itself: the mini mask comes back unchanged
            assert ok[1:].all()
            np.testing.assert_array_equal(masks[0, slot], gt[2][0, 0])
        else:  # shifted 2 px right of the gt box (2 / 40 of the mask): columns move left
            assert masks[0, slot].sum() > 0.8 * gt[2][0, 0].sum()
    assert roi_valid[0].sum() == 2


def test_at_most_p_positives_and_empty_images_give_no_targets():
    config = TinyConfig()
    rng = np.random.default_rng(3)
    jitter = PERSON + rng.uniform(-2, 2, (40, 4)).astype(np.float32)
    props, valid = proposals(config, jitter, batch=2)
    ids, boxes, masks, keypoints = ground_truth(config, batch=2)  # image 1 has nobody
    out = run(DetectionTargetLayer(config, seed=4), props, valid, (ids, boxes, masks, keypoints))
    rois, roi_valid, class_ids, _, _, _, kp_weights = out
    p = positive_slots(config)
    assert roi_valid[0, :p].all() and not roi_valid[0, p:].any()  # 41 positives, 0 negatives
    assert len(rows_of(rois[0, :p], roi_valid[0, :p])) == p  # distinct picks
    # Image 1: every proposal is background; no positive, no keypoint target.
    assert not roi_valid[1, :p].any() and roi_valid[1, p:].sum() == 22
    assert not class_ids[1].any() and not kp_weights[1].any()


def test_draws_change_between_steps_and_gt_boxes_are_optional():
    config = TinyConfig(ROI_ADD_GT_BOXES=False)
    far = [[x, 100, x + 20, 120] for x in range(0, 100, 2)]  # 50 background proposals
    props, valid = proposals(config, far)
    layer = DetectionTargetLayer(config, seed=5)
    first = run(layer, props, valid, ground_truth(config))
    second = run(layer, props, valid, ground_truth(config))
    assert first[1][0].sum() == second[1][0].sum() == 22  # no positives without the gt boxes
    assert rows_of(first[0][0], first[1][0]) != rows_of(second[0][0], second[1][0])


def test_too_few_candidates_is_an_error():
    with pytest.raises(ValueError, match="cannot fill TRAIN_ROIS_PER_IMAGE=32"):
        DetectionTargetLayer(TinyConfig(POST_NMS_ROIS_TRAINING=8, ROI_ADD_GT_BOXES=False,
                                        POST_NMS_ROIS_INFERENCE=8, DETECTION_MAX_INSTANCES=8))


def test_config_round_trip():
    layer = DetectionTargetLayer(TinyConfig(), seed=7, name="roi_targets")
    again = DetectionTargetLayer.from_config(layer.get_config())
    assert again.seed == 7 and again.num_rois == 32 and again.config.IMAGE_SHAPE == (128, 128, 3)
