"""boxes.nms / nms_per_class / nms_batched against a numpy greedy NMS written from the
definition torchvision.ops.nms implements (visit by decreasing score, ties by index; drop a box
whose IoU with a kept one is > threshold)."""
import keras
import numpy as np
import pytest

from ops_test_helpers import fast_path_params
from mrcnn_kp.ops import boxes


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def iou_one(p, q):
    iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
    ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
    area = lambda b: max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])  # noqa: E731
    union = area(p) + area(q) - iw * ih
    return iw * ih / union if union > 0 else 0.0


def reference_nms(bxs, scores, threshold, max_output, classes=None):
    classes = np.zeros(len(scores), int) if classes is None else classes
    keep = []
    for i in sorted(range(len(scores)), key=lambda i: (-scores[i], i)):
        if not scores[i] > -np.inf:
            continue
        if all(classes[k] != classes[i] or iou_one(bxs[k], bxs[i]) <= threshold for k in keep):
            keep.append(i)
    keep = keep[:max_output]
    return np.array(keep + [-1] * (max_output - len(keep))), len(keep)


def clustered_boxes(rng, n, clusters=6, size=200.0):
    centres = rng.uniform(20, size, (clusters, 2))
    c = centres[rng.integers(0, clusters, n)] + rng.normal(0, 4, (n, 2))
    wh = rng.uniform(5, 40, (n, 2))
    return np.concatenate([c - wh / 2, c + wh / 2], axis=1).astype(np.float32)


PATHS = fast_path_params()


@pytest.mark.parametrize("use_fast_path", PATHS)
@pytest.mark.parametrize("threshold,max_output", [(0.5, 100), (0.7, 10), (0.3, 3), (0.0, 50)])
def test_nms_matches_greedy_reference_with_ties(compiled, use_fast_path, threshold, max_output):
    rng = np.random.default_rng(int(threshold * 10) + max_output)
    bxs = clustered_boxes(rng, 120)
    scores = rng.integers(0, 8, 120).astype(np.float32) / 8  # many exact ties
    want_idx, want_n = reference_nms(bxs, scores, threshold, max_output)
    fn = compiled(boxes.nms, graph=True, iou_threshold=threshold, max_output=max_output,
                  use_fast_path=use_fast_path)
    idx, count = fn(bxs, scores)
    assert int(to_numpy(count)) == want_n
    np.testing.assert_array_equal(to_numpy(idx), want_idx)


@pytest.mark.parametrize("use_fast_path", PATHS)
def test_nms_edge_cases(compiled, use_fast_path):
    bxs = np.array([
        [0, 0, 10, 10],
        [0, 0, 10, 10],      # duplicate of 0, same score: 0 wins (lower index)
        [5, 5, 5, 5],        # zero area: overlaps nothing, never suppressed
        [5, 5, 5, 5],        # its duplicate: IoU 0/0 counts as 0, kept too
        [-50, -50, 8, 8],    # crosses the image border
        [30, 30, 20, 20],    # inverted: area 0
        [0, 0, 10, 5],       # IoU with box 0 exactly 0.5: not > 0.5, kept
        [100, 100, 110, 110],
    ], np.float32)
    scores = np.array([0.9, 0.9, 0.8, 0.8, 0.7, 0.6, 0.5, -np.inf], np.float32)
    fn = compiled(boxes.nms, iou_threshold=0.5, max_output=10, use_fast_path=use_fast_path)
    idx, count = fn(bxs, scores)
    want_idx, want_n = reference_nms(bxs, scores, 0.5, 10)
    assert want_idx[:want_n].tolist() == [0, 2, 3, 4, 5, 6]  # the -inf box is never kept
    assert int(to_numpy(count)) == want_n
    np.testing.assert_array_equal(to_numpy(idx), want_idx)


@pytest.mark.parametrize("use_fast_path", PATHS)
def test_nms_empty_and_all_masked(compiled, use_fast_path):
    idx, count = compiled(boxes.nms, iou_threshold=0.5, max_output=4,
                          use_fast_path=use_fast_path)(np.zeros((0, 4)), np.zeros((0,)))
    assert to_numpy(idx).tolist() == [-1] * 4 and int(to_numpy(count)) == 0
    idx, count = compiled(boxes.nms, iou_threshold=0.5, max_output=2,
                          use_fast_path=use_fast_path)(np.ones((3, 4)), np.full(3, -np.inf))
    assert to_numpy(idx).tolist() == [-1, -1] and int(to_numpy(count)) == 0


@pytest.mark.parametrize("use_fast_path", PATHS)
def test_nms_per_class_matches_reference(compiled, use_fast_path):
    rng = np.random.default_rng(5)
    bxs = clustered_boxes(rng, 90, clusters=4)
    scores = rng.integers(0, 10, 90).astype(np.float32) / 10
    classes = rng.integers(1, 4, 90)
    scores[classes == 3] = -np.inf  # a masked class
    want_idx, want_n = reference_nms(bxs, scores, 0.3, 40, classes)
    fn = compiled(boxes.nms_per_class, graph=True, iou_threshold=0.3, max_output=40,
                  use_fast_path=use_fast_path)
    idx, count = fn(bxs, scores, classes.astype(np.int32))
    assert int(to_numpy(count)) == want_n
    np.testing.assert_array_equal(to_numpy(idx), want_idx)
    # the same boxes as one class keep fewer: classes really are independent
    assert reference_nms(bxs, scores, 0.3, 40)[1] < want_n


@pytest.mark.parametrize("use_fast_path", PATHS)
def test_nms_batched_per_image(compiled, use_fast_path):
    rng = np.random.default_rng(6)
    bxs = np.stack([clustered_boxes(rng, 60), clustered_boxes(rng, 60)])  # [2, 60, 4]
    scores = rng.uniform(size=(2, 60)).astype(np.float32)
    scores[1, 30:] = -np.inf  # padding rows of the second image
    fn = compiled(boxes.nms_batched, graph=True, iou_threshold=0.7, max_output=25,
                  use_fast_path=use_fast_path)
    idx, counts = fn(bxs, scores)
    assert to_numpy(idx).shape == (2, 25) and to_numpy(counts).shape == (2,)
    for b in range(2):
        want_idx, want_n = reference_nms(bxs[b], scores[b], 0.7, 25)
        assert int(to_numpy(counts)[b]) == want_n
        np.testing.assert_array_equal(to_numpy(idx)[b], want_idx)


def test_nms_batched_inside_a_keras_model_with_symbolic_batch(in_keras_model):
    rng = np.random.default_rng(7)
    bxs = np.stack([clustered_boxes(rng, 40), clustered_boxes(rng, 40)])
    scores = rng.uniform(size=(2, 40)).astype(np.float32)
    shapes, (idx, counts) = in_keras_model(lambda b, s: boxes.nms_batched(b, s, 0.5, 12),
                                           bxs, scores)
    assert shapes == [(None, 12), (None,)]
    for b in range(2):
        want_idx, want_n = reference_nms(bxs[b], scores[b], 0.5, 12)
        np.testing.assert_array_equal(np.asarray(idx)[b], want_idx)
        assert int(np.asarray(counts)[b]) == want_n
