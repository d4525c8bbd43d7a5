"""ProposalLayer on hand-set RPN outputs: top-k, deltas, clipping, NMS, padding."""
import numpy as np
import pytest
from keras import ops

from mrcnn_kp.config import TinyConfig
from mrcnn_kp.model.proposals import NormalizedToPixels, ProposalLayer, gather_rows
from mrcnn_kp.ops.anchors import generate_pyramid_anchors, level_anchor_counts

import matterport_reference as ref


def anchor_row(config, level, y, x, ratio):
    """Row of the anchor at cell (y, x), ratio index, of pyramid level P2..P6."""
    counts = level_anchor_counts(config)
    cols = config.BACKBONE_SHAPES[level - 2][1]
    return sum(counts[:level - 2]) + (y * cols + x) * 3 + ratio


def test_gather_rows_picks_per_image():
    values = np.arange(2 * 4 * 3, dtype="float32").reshape(2, 4, 3)
    picked = np.asarray(gather_rows(values, np.array([[3, 0], [1, 1]])))
    np.testing.assert_array_equal(picked, [[values[0, 3], values[0, 0]],
                                           [values[1, 1], values[1, 1]]])


def test_proposals_are_the_best_refined_clipped_non_overlapping_anchors():
    config = TinyConfig()
    anchors = generate_pyramid_anchors(config)
    a = config.NUM_ANCHORS
    fg = np.full((1, a), 0.01, np.float32)
    deltas = np.zeros((1, a, 4), np.float32)
    best = anchor_row(config, 4, 3, 3, 1)  # 64 x 64 box centred on (48, 48)
    twin = anchor_row(config, 4, 3, 4, 1)  # its right neighbour, moved onto it by its deltas
    shifted = anchor_row(config, 3, 5, 9, 1)  # 32 x 32 at (72, 40), moved 4 px down
    corner = anchor_row(config, 2, 0, 0, 1)  # 16 x 16 at (0, 0): sticks out of the image
    fg[0, [best, twin, shifted, corner]] = [0.99, 0.98, 0.97, 0.96]
    deltas[0, twin] = [0.0, -16 / 64 / 0.1, 0.0, 0.0]  # dx * std * width = -16 px
    deltas[0, shifted] = [4 / 32 / 0.1, 0.0, np.log(1.5) / 0.2, 0.0]  # 4 px down, 1.5 x taller
    probs = np.stack([1 - fg, fg], -1)
    rois, scores, valid = [np.asarray(ops.convert_to_numpy(x)) for x in
                           ProposalLayer(config, 64)(probs, deltas)]
    assert rois.shape == (1, 64, 4) and scores.shape == (1, 64) and valid.all()
    np.testing.assert_allclose(rois[0, 0], anchors[best], atol=1e-4)
    np.testing.assert_allclose(rois[0, 1], [56, 20, 88, 68], atol=1e-4)  # twin suppressed
    np.testing.assert_allclose(rois[0, 2], [0, 0, 8, 8], atol=1e-4)  # clipped corner
    np.testing.assert_allclose(scores[0, :3], [0.99, 0.97, 0.96], rtol=1e-6)
    assert np.all(np.diff(scores[0]) <= 0)
    assert not np.any(np.all(np.abs(rois[0, 3:] - anchors[best]) < 1e-3, axis=-1))


def test_padding_when_nms_leaves_fewer_boxes():
    config = TinyConfig(PRE_NMS_LIMIT=64, POST_NMS_ROIS_INFERENCE=32, POST_NMS_ROIS_TRAINING=64,
                        RPN_NMS_THRESHOLD=0.0)
    a = config.NUM_ANCHORS
    probs = np.zeros((2, a, 2), np.float32)
    probs[..., 1] = np.linspace(0.0, 1.0, a)
    # A huge shared box for every anchor: NMS at IoU 0 keeps exactly one per image.
    deltas = np.zeros((2, a, 4), np.float32)
    deltas[..., 2:] = 20.0
    rois, scores, valid = [np.asarray(ops.convert_to_numpy(x)) for x in
                           ProposalLayer(config, 64)(probs, deltas)]
    assert valid.sum(axis=1).tolist() == [1, 1]
    assert np.all(rois[:, 1:] == 0) and np.all(scores[:, 1:] == 0)
    np.testing.assert_allclose(rois[:, 0], [[0, 0, 128, 128]] * 2)


def test_config_round_trip_and_limits():
    config = TinyConfig()
    layer = ProposalLayer(config, 32, name="ROI")
    again = ProposalLayer.from_config(layer.get_config())
    assert again.proposal_count == 32 and again.pre_nms_limit == 256
    assert again.anchors.shape == (config.NUM_ANCHORS, 4)
    with pytest.raises(ValueError, match="exceeds the 256 boxes kept before NMS"):
        ProposalLayer(config, 300)


# ------------------------------------------------------------------ matterport's ProposalLayer
def test_matterport_mode_equals_matterports_proposal_layer():
    from mrcnn_kp.config import MatterportConfig
    from mrcnn_kp.ops.matterport import normalized_anchors

    config = MatterportConfig(IMAGE_MIN_DIM=256, IMAGE_MAX_DIM=256, IMAGES_PER_GPU=2)
    assert (config.PRE_NMS_LIMIT, config.POST_NMS_ROIS_INFERENCE,
            config.RPN_NMS_THRESHOLD) == (6000, 1000, 0.7)
    rng = np.random.default_rng(0)
    a = config.NUM_ANCHORS  # 16368
    logits = rng.normal(0, 2, (2, a, 2)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    deltas = rng.normal(0, 1, (2, a, 4)).astype(np.float32)
    rois, scores, valid = [np.asarray(ops.convert_to_numpy(x)) for x in
                           ProposalLayer(config, 1000)(probs, deltas)]
    want, kept = ref.proposals(
        probs, deltas, normalized_anchors(config), 6000, 1000, 0.7, config.RPN_BBOX_STD_DEV)
    assert rois.shape == (2, 1000, 4)
    assert valid.sum(axis=1).tolist() == kept.tolist() and 300 < kept.min()
    assert np.all(valid[:, :kept.min()])
    # matterport's normalised (y1, x1, y2, x2) ROIs, zero padded, as its graph has them
    diff = np.abs(rois - want).max()
    print("max |ours - matterport|, normalised:", diff)
    assert diff <= 1e-6, diff
    assert np.all(rois[~valid] == 0)
    pixels = np.asarray(NormalizedToPixels((256, 256, 3))(rois, valid))  # (x1, y1, x2, y2)
    np.testing.assert_allclose(pixels[valid], ref.to_pixels(want, 256)[valid], atol=1e-4)
    assert np.all(pixels[~valid] == 0)
    assert np.all(scores[valid] > 0) and np.all(np.diff(scores, axis=1) <= 0)


def test_torchvision_layout_keeps_the_best_per_level_and_runs_nms_within_levels():
    """config.LAYOUT "torchvision": top PRE_NMS_LIMIT per level, boxes under 1e-3 px dropped,
    NMS only between boxes of one level (torchvision's filter_proposals)."""
    from mrcnn_kp.config import TorchvisionKeypointConfig

    config = TorchvisionKeypointConfig(IMAGE_MAX_DIM=128, IMAGE_MIN_DIM=128,
                                       IMAGE_RESIZE_MAX_SIDE=128, PRE_NMS_LIMIT=3,
                                       POST_NMS_ROIS_INFERENCE=8, DETECTION_MAX_INSTANCES=8)
    anchors = generate_pyramid_anchors(config)
    fg = np.full((1, config.NUM_ANCHORS), 0.1, np.float32)
    deltas = np.zeros((1, config.NUM_ANCHORS, 4), np.float32)
    best = anchor_row(config, 2, 8, 8, 1)  # 32 x 32 at (32, 32)
    neighbour = anchor_row(config, 2, 8, 9, 1)  # 4 px to the right: IoU 0.78 with best
    tiny = anchor_row(config, 2, 4, 4, 1)  # shrunk below 1e-3 px by its deltas
    other_level = anchor_row(config, 3, 4, 4, 1)  # 64 x 64 at (32, 32), shrunk onto best
    fg[0, [tiny, best, other_level, neighbour]] = [0.95, 0.9, 0.85, 0.8]
    deltas[0, tiny, 2:] = -20.0
    deltas[0, other_level, 2:] = np.log(0.5)  # RPN_BBOX_STD_DEV is 1: plain log-scales
    probs = np.stack([1 - fg, fg], -1)
    layer = ProposalLayer(config, 8)
    assert layer.pre_nms_limit == 3 * 5  # per level
    rois, scores, valid = [np.asarray(ops.convert_to_numpy(x)) for x in layer(probs, deltas)]
    np.testing.assert_allclose(scores[0, :2], [0.9, 0.85], rtol=1e-6)
    np.testing.assert_allclose(rois[0, 0], anchors[best], atol=1e-4)
    np.testing.assert_allclose(rois[0, 1], anchors[best], atol=1e-4)  # same box, other level
    assert not np.any(np.isclose(scores[0], 0.95)) and not np.any(np.isclose(scores[0], 0.8))
    assert valid[0].sum() == 8 and np.all(np.diff(scores[0]) <= 0)


def test_torchvision_layout_ranks_saturated_anchors_by_their_logit():
    """Objectness logits 20 and 25 both give probability 1.0 in float32: ranked by the
    probability the lower row would win the tie and suppress its neighbour; torchvision ranks
    by the logit, and so does the layer given rpn_class_logits."""
    from mrcnn_kp.config import TorchvisionKeypointConfig

    config = TorchvisionKeypointConfig(IMAGE_MAX_DIM=128, IMAGE_MIN_DIM=128,
                                       IMAGE_RESIZE_MAX_SIDE=128, PRE_NMS_LIMIT=3,
                                       POST_NMS_ROIS_INFERENCE=8, DETECTION_MAX_INSTANCES=8)
    anchors = generate_pyramid_anchors(config)
    logit = np.full((1, config.NUM_ANCHORS), -2.0, np.float32)
    first = anchor_row(config, 2, 8, 8, 1)  # 32 x 32 at (32, 32)
    neighbour = anchor_row(config, 2, 8, 9, 1)  # 4 px to the right: IoU 0.78
    logit[0, [first, neighbour]] = [20.0, 25.0]
    logits = np.stack([np.zeros_like(logit), logit], -1)  # the layout's (0, l)
    fg = 1.0 / (1.0 + np.exp(-logit))
    assert fg[0, first] == fg[0, neighbour] == 1.0
    probs = np.stack([1 - fg, fg], -1).astype(np.float32)
    deltas = np.zeros((1, config.NUM_ANCHORS, 4), np.float32)
    layer = ProposalLayer(config, 8)
    by_logit = np.asarray(ops.convert_to_numpy(
        layer(probs, deltas, rpn_class_logits=logits)[0]))
    by_probability = np.asarray(ops.convert_to_numpy(layer(probs, deltas)[0]))
    np.testing.assert_allclose(by_logit[0, 0], anchors[neighbour], atol=1e-4)
    np.testing.assert_allclose(by_probability[0, 0], anchors[first], atol=1e-4)
    assert not np.any(np.all(np.isclose(by_logit[0], anchors[first], atol=1e-4), axis=-1))


def test_torchvision_layout_uses_the_image_window_and_its_padded_anchor_grid():
    """With image_meta: boxes clip to the image's window, and anchors whose cell lies beyond
    the image's size padded to 32 (no such cell in torchvision's maps) never compete."""
    from mrcnn_kp.config import TorchvisionKeypointConfig

    from model_batches import image_meta

    config = TorchvisionKeypointConfig(IMAGE_MAX_DIM=128, IMAGE_MIN_DIM=64,
                                       IMAGE_RESIZE_MAX_SIDE=128, PRE_NMS_LIMIT=3,
                                       POST_NMS_ROIS_INFERENCE=8, DETECTION_MAX_INSTANCES=8)
    fg = np.full((1, config.NUM_ANCHORS), 0.1, np.float32)
    outside = anchor_row(config, 2, 20, 4, 1)  # centre y 80 >= 64 = 60 padded to 32
    edge = anchor_row(config, 2, 8, 22, 1)  # 32 x 32 at (88, 32): sticks out of x2 = 90
    fg[0, [outside, edge]] = [0.99, 0.9]
    probs = np.stack([1 - fg, fg], -1)
    deltas = np.zeros((1, config.NUM_ANCHORS, 4), np.float32)
    meta = image_meta(config, window=(0, 0, 60, 90))[None]  # (y1, x1, y2, x2)
    rois, scores, valid = [np.asarray(ops.convert_to_numpy(x)) for x in
                           ProposalLayer(config, 8)(probs, deltas, image_meta=meta)]
    np.testing.assert_allclose(scores[0, 0], 0.9, rtol=1e-6)
    np.testing.assert_allclose(rois[0, 0], [72, 16, 90, 48], atol=1e-4)
    assert not np.any(np.isclose(scores[0], 0.99))
    assert rois[0, valid[0]][:, 2].max() <= 90 and rois[0, valid[0]][:, 3].max() <= 60
