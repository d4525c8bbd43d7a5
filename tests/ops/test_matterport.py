"""ops.matterport: matterport's normalised boxes, anchors, deltas and clipping, against the
definitions of docs/MATTERPORT.md written out here."""
import numpy as np
import pytest

from mrcnn_kp.config import MatterportConfig
from mrcnn_kp.ops import matterport as mp

import matterport_reference as ref


def test_normalized_anchors_are_matterports_get_anchors():
    config = MatterportConfig(IMAGE_MIN_DIM=128, IMAGE_MAX_DIM=128)
    got = mp.normalized_anchors(config)
    want = ref.anchors(config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS,
                             config.BACKBONE_SHAPES, config.BACKBONE_STRIDES, 128)
    assert got.shape == (config.NUM_ANCHORS, 4) == (4092, 4)
    np.testing.assert_array_equal(got, want)  # bit for bit (float64 pixels, one rounding)
    assert not got.flags.writeable


def test_norm_and_denorm_boxes_use_the_minus_one_and_the_far_edge_shift():
    boxes = np.array([[0, 0, 512, 512], [64, 32, 448, 480]], np.float64)
    norm = mp.norm_boxes_numpy(boxes, (512, 512))
    assert norm.dtype == np.float32
    np.testing.assert_allclose(norm[0], [0, 0, 1, 1])
    np.testing.assert_allclose(norm[1], [64 / 511, 32 / 511, 447 / 511, 479 / 511], rtol=1e-7)
    np.testing.assert_array_equal(mp.denorm_boxes_numpy(norm, (512, 512)), boxes)
    # + (0, 0, 1, 1), then np.around rounds half to even: 0.5 -> 0, 1.5 -> 2, 3.5 -> 4, 4.5 -> 4
    half = np.array([[0.5 / 9, 1.5 / 9, 2.5 / 9, 3.5 / 9]])
    np.testing.assert_array_equal(mp.denorm_boxes_numpy(half, (10, 10)), [[0, 2, 4, 4]])


def test_pixel_round_trip_and_window(compiled):
    shape = (512, 512, 3)
    pixels = np.array([[32.0, 64.0, 480.0, 448.0], [0, 0, 1, 1]], np.float32)  # x1, y1, x2, y2
    norm = np.asarray(compiled(mp.from_pixels, image_shape=shape)(pixels))
    np.testing.assert_allclose(norm, [[64 / 511, 32 / 511, 447 / 511, 479 / 511], [0, 0, 0, 0]],
                               rtol=1e-6, atol=1e-7)
    back = np.asarray(compiled(mp.to_pixels, image_shape=shape)(norm))
    np.testing.assert_allclose(back, pixels, atol=2e-5)
    window = np.asarray(compiled(mp.window_from_meta, image_shape=shape)(
        np.array([0, 64, 512, 448], np.float32)))
    np.testing.assert_allclose(window, [0, 64 / 511, 1, 447 / 511], rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_apply_deltas_and_clip_follow_matterport(compiled, seed):
    rng = np.random.default_rng(seed)
    y1x1 = rng.uniform(-0.2, 0.9, (50, 2))
    boxes = np.concatenate([y1x1, y1x1 + rng.uniform(0, 0.5, (50, 2))], 1).astype(np.float32)
    deltas = rng.normal(0, 1.0, (50, 4)).astype(np.float32)
    deltas[0, 2:] = 6.0  # no cap on the log-scales (ops.boxes caps at log(1000 / 16))
    got = np.asarray(compiled(mp.apply_box_deltas)(boxes, deltas))
    h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cy = boxes[:, 0] + 0.5 * h + deltas[:, 0] * h
    cx = boxes[:, 1] + 0.5 * w + deltas[:, 1] * w
    h, w = h * np.exp(deltas[:, 2]), w * np.exp(deltas[:, 3])
    y1, x1 = cy - 0.5 * h, cx - 0.5 * w
    want = np.stack([y1, x1, y1 + h, x1 + w], 1)  # y2 from y1, not from cy
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    window = np.array([0.1, 0.0, 0.9, 1.0], np.float32)
    clipped = np.asarray(compiled(mp.clip_boxes)(got, window))
    lo, hi = window[[0, 1, 0, 1]], window[[2, 3, 2, 3]]
    np.testing.assert_allclose(clipped, np.maximum(np.minimum(got, hi), lo), rtol=1e-6)
