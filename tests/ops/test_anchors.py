"""anchors.generate_pyramid_anchors against matterport's published geometry and order."""
import math

import numpy as np
import pytest

from mrcnn_kp.config import Config, TinyConfig
from mrcnn_kp.ops import anchors


def reference_anchors(config):
    """matterport utils.generate_pyramid_anchors, written as plain loops (x1, y1, x2, y2)."""
    out = []
    for scale, stride in zip(config.RPN_ANCHOR_SCALES, config.BACKBONE_STRIDES):
        rows = math.ceil(config.IMAGE_SHAPE[0] / stride)
        cols = math.ceil(config.IMAGE_SHAPE[1] / stride)
        for y in range(0, rows, config.RPN_ANCHOR_STRIDE):
            for x in range(0, cols, config.RPN_ANCHOR_STRIDE):
                for ratio in config.RPN_ANCHOR_RATIOS:
                    h = scale / math.sqrt(ratio)
                    w = scale * math.sqrt(ratio)
                    cy, cx = y * stride, x * stride
                    out.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return np.array(out, np.float32)


def test_tiny_config_equals_loop_reference():
    config = TinyConfig()
    got = anchors.generate_pyramid_anchors(config)
    assert got.dtype == np.float32 and got.shape == (config.NUM_ANCHORS, 4)
    np.testing.assert_allclose(got, reference_anchors(config), rtol=0, atol=1e-4)


def test_anchor_stride_two_equals_loop_reference():
    config = TinyConfig(RPN_ANCHOR_STRIDE=2)
    got = anchors.generate_pyramid_anchors(config)
    assert got.shape == (config.NUM_ANCHORS, 4)
    np.testing.assert_allclose(got, reference_anchors(config), rtol=0, atol=1e-4)


def test_matterport_512_layout_counts_and_first_boxes():
    config = Config(IMAGE_MIN_DIM=512, IMAGE_MAX_DIM=512)
    got = anchors.generate_pyramid_anchors(config)
    assert got.shape == (65472, 4)
    counts = anchors.level_anchor_counts(config)
    assert counts == (49152, 12288, 3072, 768, 192)
    assert np.cumsum((0,) + counts)[:-1].tolist() == [0, 49152, 61440, 64512, 65280]
    # P2, cell (0, 0), ratio 0.5 (w/h): h = 32 / sqrt(.5) = 45.25, w = 22.63, centre (0, 0)
    np.testing.assert_allclose(got[0], [-11.3137, -22.6274, 11.3137, 22.6274], atol=1e-3)
    # P2, cell (row 0, col 1), ratio 0.5: centre x = 4 (stride 4, no half-stride offset)
    np.testing.assert_allclose(got[3], [4 - 11.3137, -22.6274, 4 + 11.3137, 22.6274], atol=1e-3)
    # P3 starts with the 64-px anchors at the origin
    np.testing.assert_allclose(got[49153], [-32, -32, 32, 32], atol=1e-4)
    # last anchor: P6 (stride 64, 8x8 grid), row 7, col 7, ratio 2: w = 512 * sqrt 2
    w, h = 512 * math.sqrt(2), 512 / math.sqrt(2)
    np.testing.assert_allclose(got[-1], [448 - w / 2, 448 - h / 2, 448 + w / 2, 448 + h / 2],
                               atol=1e-3)


def test_result_is_cached_and_read_only():
    config = TinyConfig()
    first = anchors.generate_pyramid_anchors(config)
    assert anchors.generate_pyramid_anchors(TinyConfig()) is first
    with pytest.raises(ValueError, match="read-only"):
        first[0, 0] = 1.0


def test_torchvision_layout_rounds_base_anchors_in_its_order():
    """torchvision's AnchorGenerator cell anchors for size 32, aspect ratios (h / w) 0.5, 1, 2:
    [[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]], at (x, y) * stride."""
    from mrcnn_kp.config import TorchvisionKeypointConfig

    config = TorchvisionKeypointConfig(IMAGE_MAX_DIM=128, IMAGE_MIN_DIM=128,
                                       IMAGE_RESIZE_MAX_SIDE=128)
    boxes = anchors.generate_pyramid_anchors(config)
    np.testing.assert_array_equal(boxes[:3], [[-23, -11, 23, 11], [-16, -16, 16, 16],
                                                [-11, -23, 11, 23]])
    cell_1_1 = boxes[3 * (32 + 1)]  # row 1, column 1 of P2 (32 x 32 cells, stride 4)
    np.testing.assert_array_equal(cell_1_1, [4 - 23, 4 - 11, 4 + 23, 4 + 11])
    p6 = boxes[-3:]  # last cell of P6 (2 x 2 at stride 64), size 512
    np.testing.assert_array_equal(p6[1], [64 - 256, 64 - 256, 64 + 256, 64 + 256])
    np.testing.assert_array_equal(p6[0], [64 - 362, 64 - 181, 64 + 362, 64 + 181])
