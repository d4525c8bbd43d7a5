"""boxes: IoU, deltas and clipping against numpy references written from the definitions.

NMS has its own module of tests (test_boxes_nms.py).
"""
import math

import keras
import numpy as np
import pytest

from mrcnn_kp.ops import boxes

STD = (0.1, 0.1, 0.2, 0.2)


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def reference_iou(a, b):
    """IoU by the definition, one pair at a time; area of an inverted box is 0, 0/0 is 0."""
    out = np.zeros((len(a), len(b)), np.float64)
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            area_p = max(0.0, p[2] - p[0]) * max(0.0, p[3] - p[1])
            area_q = max(0.0, q[2] - q[0]) * max(0.0, q[3] - q[1])
            union = area_p + area_q - iw * ih
            out[i, j] = iw * ih / union if union > 0 else 0.0
    return out


def reference_encode(box, ref, std):
    """matterport utils.box_refinement for one (x1, y1, x2, y2) pair, divided by std."""
    h, w = ref[3] - ref[1], ref[2] - ref[0]
    cy, cx = ref[1] + 0.5 * h, ref[0] + 0.5 * w
    gh, gw = box[3] - box[1], box[2] - box[0]
    gcy, gcx = box[1] + 0.5 * gh, box[0] + 0.5 * gw
    return np.array([(gcy - cy) / h, (gcx - cx) / w, math.log(gh / h), math.log(gw / w)]) / std


def reference_decode(delta, ref, std):
    """matterport apply_box_deltas for one box: y2 is y1 + h, not cy + h / 2."""
    dy, dx, dh, dw = np.asarray(delta, np.float64) * std
    h, w = ref[3] - ref[1], ref[2] - ref[0]
    cy, cx = ref[1] + 0.5 * h + dy * h, ref[0] + 0.5 * w + dx * w
    h, w = h * math.exp(dh), w * math.exp(dw)
    y1, x1 = cy - 0.5 * h, cx - 0.5 * w
    return np.array([x1, y1, x1 + w, y1 + h])


def random_boxes(rng, n, size=100.0):
    xy = rng.uniform(-10, size, (n, 2))
    wh = rng.uniform(1, size / 2, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


# ------------------------------------------------------------------ IoU
def test_box_iou_random_matches_reference(compiled):
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 13), random_boxes(rng, 7)
    want = reference_iou(a, b)
    got = to_numpy(compiled(boxes.box_iou)(a, b))
    assert got.shape == (13, 7)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(boxes.box_iou_numpy(a, b), want, atol=1e-6)


def test_box_iou_edge_cases(compiled):
    a = np.array([
        [0, 0, 10, 10],     # ordinary
        [5, 5, 5, 5],       # zero area (a point)
        [0, 0, 10, 0],      # zero height
        [10, 10, 0, 0],     # inverted: area 0
        [-20, -20, 5, 5],   # crosses the image border
    ], np.float32)
    want = reference_iou(a, a)
    got = to_numpy(compiled(boxes.box_iou)(a, a))
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got[0, 0] == pytest.approx(1.0)
    assert got[1, 1] == 0.0 and np.all(np.isfinite(got))  # 0/0 gives 0, not NaN
    assert got[0, 4] == pytest.approx(25 / (100 + 625 - 25))


def test_box_iou_empty_and_batched(compiled):
    a = np.zeros((0, 4), np.float32)
    b = random_boxes(np.random.default_rng(1), 3)
    assert to_numpy(compiled(boxes.box_iou)(a, b)).shape == (0, 3)
    assert to_numpy(compiled(boxes.box_iou)(b, a)).shape == (3, 0)
    assert boxes.box_iou_numpy(a, b).shape == (0, 3)
    batch_a = np.stack([b, b[::-1]])  # [2, 3, 4]
    got = to_numpy(compiled(boxes.box_iou)(batch_a, batch_a[:, :2]))
    assert got.shape == (2, 3, 2)
    np.testing.assert_allclose(got[1], reference_iou(b[::-1], b[::-1][:2]), atol=1e-6)


# ------------------------------------------------------------------ deltas
def test_encode_deltas_matches_matterport_box_refinement(compiled):
    rng = np.random.default_rng(2)
    gt, ref = random_boxes(rng, 20), random_boxes(rng, 20)
    want = np.stack([reference_encode(g, r, np.array(STD)) for g, r in zip(gt, ref)])
    got = to_numpy(compiled(boxes.encode_deltas)(gt, ref, STD))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(boxes.encode_deltas_numpy(gt, ref, STD), want, rtol=1e-4,
                               atol=1e-4)


def test_decode_deltas_matches_matterport_apply_box_deltas_and_inverts_encode(compiled):
    rng = np.random.default_rng(3)
    ref = random_boxes(rng, 20)
    deltas = rng.normal(0, 1, (20, 4)).astype(np.float32)
    want = np.stack([reference_decode(d, r, np.array(STD)) for d, r in zip(deltas, ref)])
    got = to_numpy(compiled(boxes.decode_deltas)(deltas, ref, STD))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(boxes.decode_deltas_numpy(deltas, ref, STD), want, rtol=1e-4,
                               atol=1e-3)
    gt = random_boxes(rng, 20)
    encoded = compiled(boxes.encode_deltas)(gt, ref, STD)
    round_trip = compiled(boxes.decode_deltas)(encoded, ref, STD)
    np.testing.assert_allclose(to_numpy(round_trip), gt, atol=1e-3)


def test_deltas_are_finite_for_zero_size_boxes_and_empty_input(compiled):
    ref = np.array([[5, 5, 5, 5], [0, 0, 10, 0], [0, 0, 10, 10]], np.float32)
    gt = np.array([[0, 0, 10, 10], [2, 2, 2, 2], [3, 3, 3, 12]], np.float32)
    for deltas in (to_numpy(compiled(boxes.encode_deltas)(gt, ref, STD)),
                   boxes.encode_deltas_numpy(gt, ref, STD)):
        assert np.all(np.isfinite(deltas)), deltas
    huge = np.full((3, 4), 1e4, np.float32)
    decoded = to_numpy(compiled(boxes.decode_deltas)(huge, ref, STD))
    assert np.all(np.isfinite(decoded))
    empty = np.zeros((0, 4), np.float32)
    assert to_numpy(compiled(boxes.encode_deltas)(empty, empty, STD)).shape == (0, 4)
    assert boxes.decode_deltas_numpy(empty, empty, STD).shape == (0, 4)


def test_decode_deltas_batched_shape(compiled):
    ref = random_boxes(np.random.default_rng(4), 6).reshape(2, 3, 4)
    got = to_numpy(compiled(boxes.decode_deltas)(np.zeros((2, 3, 4)), ref, STD))
    assert got.shape == (2, 3, 4)
    np.testing.assert_allclose(got, ref, atol=1e-4)  # zero deltas leave the boxes alone


# ------------------------------------------------------------------ clipping
def test_clip_boxes_to_window_and_per_image_windows(compiled):
    b = np.array([[-5, -5, 20, 20], [3, 4, 5, 6], [30, 30, 40, 40]], np.float32)
    want = np.array([[0, 1, 16, 12], [3, 4, 5, 6], [16, 12, 16, 12]], np.float32)
    np.testing.assert_array_equal(to_numpy(compiled(boxes.clip_boxes)(b, [0, 1, 16, 12])), want)
    np.testing.assert_array_equal(boxes.clip_boxes_numpy(b, [0, 1, 16, 12]), want)
    windows = np.array([[[0, 1, 16, 12]], [[0, 0, 100, 100]]], np.float32)  # [2, 1, 4]
    got = to_numpy(compiled(boxes.clip_boxes)(np.stack([b, b]), windows))
    np.testing.assert_array_equal(got[0], want)
    np.testing.assert_array_equal(got[1], [[0, 0, 20, 20], [3, 4, 5, 6], [30, 30, 40, 40]])
