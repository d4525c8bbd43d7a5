"""Each loss against a value worked out by hand or in plain numpy, and the 'nothing valid' cases."""
import math

import numpy as np
import pytest
from keras import ops

from mrcnn_kp import losses
from mrcnn_kp.config import LOSS_NAMES


def value(x):
    return float(ops.convert_to_numpy(x))


def np_log_softmax(x, axis=-1):
    x = np.asarray(x, np.float64)
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


# ------------------------------------------------------------------------------------- RPN
def test_rpn_class_loss_averages_over_non_neutral_anchors():
    match = np.array([[1, -1, 0, 1]], np.int32)
    logits = np.array([[[0.0, 0.0], [2.0, 0.0], [50.0, -50.0], [0.0, math.log(3.0)]]], np.float32)
    # anchor 0: -log(1/2); anchor 1 (negative): -log(e^2/(e^2+1)); anchor 3: -log(3/4).
    expected = (math.log(2) + math.log(1 + math.exp(-2)) + math.log(4 / 3)) / 3
    assert value(losses.rpn_class_loss(match, logits)) == pytest.approx(expected, rel=1e-5)


def test_rpn_class_loss_is_zero_when_every_anchor_is_neutral():
    match = np.zeros((2, 5), np.int32)
    logits = np.full((2, 5, 2), np.inf, np.float32)
    assert value(losses.rpn_class_loss(match, logits)) == 0.0


def test_rpn_bbox_loss_is_smooth_l1_over_positive_coordinates():
    match = np.array([[1, 0, -1]], np.int32)
    target = np.array([[[0.5, -2.0, 0.0, 1.0], [9, 9, 9, 9], [9, 9, 9, 9]]], np.float32)
    pred = np.zeros((1, 3, 4), np.float32)
    # |d| = 0.5 -> 0.125; 2 -> 1.5; 0 -> 0; 1 -> 0.5; mean over 4 coordinates of 1 positive.
    assert value(losses.rpn_bbox_loss(target, match, pred)) == pytest.approx(2.125 / 4)


def test_rpn_bbox_loss_is_zero_without_positive_anchors():
    match = np.array([[0, -1]], np.int32)
    pred = np.full((1, 2, 4), np.nan, np.float32)
    assert value(losses.rpn_bbox_loss(np.zeros((1, 2, 4)), match, pred)) == 0.0


# ------------------------------------------------------------------------------------- heads
def test_mrcnn_class_loss_ignores_invalid_rois():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 4)).astype(np.float32)
    target = np.array([[1, 0, 3], [2, 0, 0]], np.int32)
    valid = np.array([[True, True, False], [True, False, False]])
    log_probs = np_log_softmax(logits)
    picked = [-log_probs[0, 0, 1], -log_probs[0, 1, 0], -log_probs[1, 0, 2]]
    got = value(losses.mrcnn_class_loss(target, logits, valid))
    assert got == pytest.approx(np.mean(picked), rel=1e-5)


def test_mrcnn_class_loss_is_zero_without_valid_rois():
    logits = np.zeros((1, 2, 2), np.float32)
    assert value(losses.mrcnn_class_loss(np.zeros((1, 2)), logits, np.zeros((1, 2)))) == 0.0


def test_mrcnn_bbox_loss_uses_the_target_class_deltas_of_positives():
    pred = np.zeros((1, 3, 3, 4), np.float32)
    pred[0, 0, 2] = [0.1, 0.0, 0.0, 3.0]  # ROI 0 is class 2: these deltas count
    pred[0, 0, 1] = [100, 100, 100, 100]  # another class: ignored
    pred[0, 1] = 100.0  # ROI 1 is background: ignored
    target = np.zeros((1, 3, 4), np.float32)
    ids = np.array([[2, 0, 0]], np.int32)
    # d = 0.1 -> 0.005; d = 3 -> 2.5; mean over the 4 coordinates of 1 positive ROI.
    assert value(losses.mrcnn_bbox_loss(target, ids, pred)) == pytest.approx(2.505 / 4, rel=1e-5)
    assert value(losses.mrcnn_bbox_loss(target, np.zeros((1, 3)), pred)) == 0.0


def test_mrcnn_mask_loss_is_binary_cross_entropy_on_the_target_class():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 2, 4, 4, 2)).astype(np.float32)
    masks = (rng.random((1, 2, 4, 4)) > 0.5).astype(np.float32)
    ids = np.array([[1, 0]], np.int32)  # only ROI 0 is positive
    z = logits[0, 0, :, :, 1].astype(np.float64)
    t = masks[0, 0]
    p = 1 / (1 + np.exp(-z))
    expected = np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p)))
    assert value(losses.mrcnn_mask_loss(masks, ids, logits)) == pytest.approx(expected, rel=1e-5)


def test_mrcnn_mask_loss_is_zero_without_positives():
    logits = np.zeros((1, 2, 4, 4, 2), np.float32)
    assert value(losses.mrcnn_mask_loss(np.ones((1, 2, 4, 4)), np.zeros((1, 2)), logits)) == 0.0


# ------------------------------------------------------------------------------------- keypoints
def test_keypoint_loss_is_softmax_cross_entropy_over_cells_per_valid_joint():
    rng = np.random.default_rng(2)
    b, p, h, w, k = 1, 2, 4, 4, 3
    logits = rng.normal(size=(b, p, h, w, k)).astype(np.float32)
    targets = np.array([[[5, 0, 15], [3, 7, 9]]], np.int32)
    weights = np.array([[[1, 0, 1], [0, 0, 1]]], np.float32)
    expected = []
    for roi, joint in [(0, 0), (0, 2), (1, 2)]:
        flat = logits[0, roi, :, :, joint].reshape(-1)  # cell index y * w + x
        expected.append(-np_log_softmax(flat)[targets[0, roi, joint]])
    got = value(losses.keypoint_loss(targets, weights, logits))
    assert got == pytest.approx(np.mean(expected), rel=1e-5)


def test_keypoint_loss_cell_index_is_row_major():
    logits = np.full((1, 1, 56, 56, 1), -20.0, np.float32)
    logits[0, 0, 10, 30, 0] = 20.0  # y = 10, x = 30
    good = value(losses.keypoint_loss(np.array([[[10 * 56 + 30]]]), np.ones((1, 1, 1)), logits))
    bad = value(losses.keypoint_loss(np.array([[[30 * 56 + 10]]]), np.ones((1, 1, 1)), logits))
    assert good < 1e-6 and bad == pytest.approx(40.0, rel=1e-4)


def test_keypoint_loss_is_zero_not_nan_without_visible_joints():
    logits = np.zeros((2, 3, 56, 56, 17), np.float32)
    logits[0, 0, 0, 0, 0] = np.nan  # even garbage in an ignored slot stays out
    got = value(losses.keypoint_loss(np.zeros((2, 3, 17), np.int32), np.zeros((2, 3, 17), bool),
                                     logits))
    assert got == 0.0


# ------------------------------------------------------------------------------------- wrapper
def test_loss_layer_names_and_dispatch():
    assert tuple(losses.LOSS_FUNCTIONS) == LOSS_NAMES
    layer = losses.LossLayer("rpn_bbox_loss")
    assert layer.name == "rpn_bbox_loss"
    match = np.array([[1]], np.int32)
    out = layer([np.ones((1, 1, 4), np.float32), match, np.zeros((1, 1, 4), np.float32)])
    assert value(out) == pytest.approx(0.5)
    restored = losses.LossLayer.from_config(layer.get_config())
    assert restored.loss_name == "rpn_bbox_loss"


def test_loss_layer_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown loss 'box_loss'"):
        losses.LossLayer("box_loss")
