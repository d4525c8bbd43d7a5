"""Box maths: IoU, Mask R-CNN deltas, clipping, and greedy NMS with static shapes.

Boxes are (x1, y1, x2, y2) in pixels, continuous coordinates, no +1 in widths. Every formula
is written once, over an array namespace `xp` that is either numpy or keras.ops: the keras
functions (box_iou, encode_deltas, ...) run in the model on both backends, and the `*_numpy`
twins run the very same lines in the data pipeline, so the two cannot drift.

Deltas are matterport's (dy, dx, log dh, log dw) divided by a std (RPN_BBOX_STD_DEV or
BBOX_STD_DEV), so matterport-trained regressors keep their meaning.
"""
import math

import numpy as np
from keras import ops

from mrcnn_kp.ops import backend

# Smallest side a reference box is given in delta maths, so zero-size boxes stay finite.
MIN_SIDE = 1e-3
# Largest log-scale a decoded box may grow by (detectron2 / torchvision: log(1000 / 16)).
MAX_LOG_SCALE = math.log(1000.0 / 16)


# ------------------------------------------------------------------ shared definitions
def _area(xp, boxes):
    """[..., 4] -> [...]; a box with x2 < x1 or y2 < y1 has area 0."""
    w = xp.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    h = xp.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return w * h


def _iou(xp, a, b):
    """a [..., N, 4], b [..., M, 4] -> [..., N, M]; 0 where the union is empty."""
    a = a[..., :, None, :]  # [..., N, 1, 4]
    b = b[..., None, :, :]  # [..., 1, M, 4]
    inter_w = xp.maximum(xp.minimum(a[..., 2], b[..., 2]) - xp.maximum(a[..., 0], b[..., 0]), 0.0)
    inter_h = xp.maximum(xp.minimum(a[..., 3], b[..., 3]) - xp.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = inter_w * inter_h  # [..., N, M]
    union = _area(xp, a) + _area(xp, b) - inter  # [..., N, M]
    return xp.where(union > 0.0, inter / xp.maximum(union, 1e-12), 0.0)


def _centre_size(xp, boxes):
    """[..., 4] (x1, y1, x2, y2) -> centre x, centre y, width, height, each [...]."""
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def _encode(xp, boxes, reference, std):
    """Deltas (dy, dx, log dh, log dw) / std that move `reference` onto `boxes`, [..., 4]."""
    cx, cy, w, h = _centre_size(xp, boxes)
    rcx, rcy, rw, rh = _centre_size(xp, reference)
    rw = xp.maximum(rw, MIN_SIDE)
    rh = xp.maximum(rh, MIN_SIDE)
    deltas = xp.stack([(cy - rcy) / rh, (cx - rcx) / rw,
                       xp.log(xp.maximum(h, MIN_SIDE) / rh),
                       xp.log(xp.maximum(w, MIN_SIDE) / rw)], axis=-1)
    return deltas / std


def _decode(xp, deltas, reference, std):
    """Apply deltas * std to reference (matterport's apply_box_deltas) -> [..., 4] boxes."""
    deltas = deltas * std
    cx, cy, w, h = _centre_size(xp, reference)
    cy = cy + deltas[..., 0] * h
    cx = cx + deltas[..., 1] * w
    h = h * xp.exp(xp.minimum(deltas[..., 2], MAX_LOG_SCALE))
    w = w * xp.exp(xp.minimum(deltas[..., 3], MAX_LOG_SCALE))
    x1 = cx - 0.5 * w
    y1 = cy - 0.5 * h
    return xp.stack([x1, y1, x1 + w, y1 + h], axis=-1)


def _clip(xp, boxes, window):
    """Clip [..., 4] boxes into window (x1, y1, x2, y2) [..., 4] that broadcasts with boxes."""
    x1 = xp.minimum(xp.maximum(boxes[..., 0], window[..., 0]), window[..., 2])
    y1 = xp.minimum(xp.maximum(boxes[..., 1], window[..., 1]), window[..., 3])
    x2 = xp.minimum(xp.maximum(boxes[..., 2], window[..., 0]), window[..., 2])
    y2 = xp.minimum(xp.maximum(boxes[..., 3], window[..., 1]), window[..., 3])
    return xp.stack([x1, y1, x2, y2], axis=-1)


# ------------------------------------------------------------------ keras.ops (the model)
def _tensor(x, dtype="float32"):
    return ops.cast(ops.convert_to_tensor(x), dtype)


def box_area(boxes):
    """[..., 4] -> [...] float32; boxes with x2 < x1 or y2 < y1 have area 0."""
    return _area(ops, _tensor(boxes))


def box_iou(a, b):
    """IoU of every pair: a [..., N, 4], b [..., M, 4] -> [..., N, M] float32.

    Leading dimensions broadcast, so [B, N, 4] with [B, M, 4] gives [B, N, M]. Pairs whose
    union is empty (two zero-area boxes) have IoU 0.
    """
    return _iou(ops, _tensor(a), _tensor(b))


def encode_deltas(boxes, reference, std):
    """Deltas [..., 4] (dy, dx, log dh, log dw) / std that move `reference` onto `boxes`.

    boxes, reference: [..., 4] (x1, y1, x2, y2) pixels; std: 4 numbers (BBOX_STD_DEV or
    RPN_BBOX_STD_DEV). Sides below MIN_SIDE count as MIN_SIDE, so zero-size boxes stay finite.
    """
    return _encode(ops, _tensor(boxes), _tensor(reference), _tensor(std))


def decode_deltas(deltas, reference, std):
    """Boxes [..., 4] (x1, y1, x2, y2): deltas [..., 4] times std applied to reference [..., 4].

    matterport's apply_box_deltas; log-scales are capped at MAX_LOG_SCALE so a random head
    cannot overflow exp.
    """
    return _decode(ops, _tensor(deltas), _tensor(reference), _tensor(std))


def clip_boxes(boxes, window):
    """Clip boxes [..., 4] into window (x1, y1, x2, y2), e.g. [4] or [B, 1, 4] for [B, N, 4]."""
    return _clip(ops, _tensor(boxes), _tensor(window))


# ------------------------------------------------------------------ numpy twins (data pipeline)
def _array(x):
    return np.asarray(x, dtype=np.float32)


def box_area_numpy(boxes):
    """numpy twin of box_area."""
    return _area(np, _array(boxes))


def box_iou_numpy(a, b):
    """numpy twin of box_iou: [..., N, 4], [..., M, 4] -> [..., N, M] float32."""
    return _iou(np, _array(a), _array(b)).astype(np.float32)


def encode_deltas_numpy(boxes, reference, std):
    """numpy twin of encode_deltas."""
    return _encode(np, _array(boxes), _array(reference), _array(std)).astype(np.float32)


def decode_deltas_numpy(deltas, reference, std):
    """numpy twin of decode_deltas."""
    return _decode(np, _array(deltas), _array(reference), _array(std)).astype(np.float32)


def clip_boxes_numpy(boxes, window):
    """numpy twin of clip_boxes."""
    return _clip(np, _array(boxes), _array(window))


# ------------------------------------------------------------------ non-maximum suppression
def _static_length(x):
    length = x.shape[0]
    return None if length is None else int(length)


def _greedy_nms(boxes, scores, class_ids, iou_threshold, max_output):
    """Greedy NMS in keras.ops: a while loop that selects one box per iteration.

    Boxes are visited by decreasing score (ties: lower index first); a box is dropped when its
    IoU with an already selected box of the same class is > iou_threshold. -> (indices
    [max_output] int32 padded with -1, count int32).
    """
    num_boxes = _static_length(scores)
    num_boxes = ops.shape(scores)[0] if num_boxes is None else num_boxes
    order = ops.top_k(scores, num_boxes, sorted=True)[1]  # [N] stable: ties by index
    sorted_boxes = ops.take(boxes, order, axis=0)  # [N, 4]
    sorted_classes = ops.take(class_ids, order, axis=0)  # [N]
    # -inf and NaN scores are never selected (the TF kernel's rule too).
    alive = ops.take(scores, order, axis=0) > float("-inf")  # [N]
    positions = ops.arange(num_boxes, dtype="int32")
    slots = ops.arange(max_output, dtype="int32")

    def cond(alive, selected, count):
        return ops.logical_and(count < max_output, ops.any(alive))

    def body(alive, selected, count):
        pos = ops.cast(ops.argmax(ops.cast(alive, "int32")), "int32")  # first alive = best
        best_box = ops.take(sorted_boxes, pos[None], axis=0)  # [1, 4]
        overlap = _iou(ops, best_box, sorted_boxes)[0]  # [N]
        same_class = ops.take(sorted_classes, pos) == sorted_classes
        suppressed = ops.logical_and(overlap > iou_threshold, same_class)
        alive = alive & ops.logical_not(suppressed) & (positions != pos)
        selected = ops.where(slots == count, ops.take(order, pos), selected)
        return alive, selected, count + 1

    selected = ops.full((max_output,), -1, dtype="int32")
    _, selected, count = ops.while_loop(
        cond, body, (alive, selected, ops.convert_to_tensor(0, dtype="int32")))
    return selected, count


def _nms_inputs(boxes, scores):
    boxes = ops.cast(ops.convert_to_tensor(boxes), "float32")
    scores = ops.cast(ops.convert_to_tensor(scores), "float32")
    return boxes, scores


def _empty_result(max_output, lead=()):
    return (ops.full(tuple(lead) + (max_output,), -1, dtype="int32"),
            ops.zeros(tuple(lead), dtype="int32"))


def nms(boxes, scores, iou_threshold, max_output, use_fast_path=True):
    """Greedy non-maximum suppression with a static output shape.

    boxes [N, 4] (x1, y1, x2, y2), scores [N] -> (indices [max_output] int32 padded with -1,
    count int32): the boxes torchvision.ops.nms keeps, in its order (decreasing score, ties by
    lower index), truncated to max_output. A box is suppressed when its IoU with a kept box is
    > iou_threshold. Boxes scored -inf (or NaN) are never kept: use that to mask padding.
    use_fast_path=False forces the keras.ops loop (the reference for backend fast paths).
    """
    boxes, scores = _nms_inputs(boxes, scores)
    max_output = int(max_output)
    if _static_length(scores) == 0:
        return _empty_result(max_output)
    if use_fast_path:
        fast = backend.nms(boxes, scores, iou_threshold, max_output)
        if fast is not None:
            return fast
    return _greedy_nms(boxes, scores, ops.zeros_like(scores, dtype="int32"), iou_threshold,
                       max_output)


def _class_offset_boxes(boxes, class_ids):
    """Shift each class's boxes to its own region so boxes of different classes never overlap
    (torchvision's batched_nms trick)."""
    coords = ops.concatenate([ops.reshape(boxes, (-1,)), ops.zeros((1,), "float32")], axis=0)
    span = ops.max(coords) - ops.min(coords) + 1.0
    return boxes + (ops.cast(class_ids, "float32") * span)[:, None]


def nms_per_class(boxes, scores, class_ids, iou_threshold, max_output, use_fast_path=True):
    """NMS done independently per class (torchvision.ops.batched_nms), static output.

    boxes [N, 4], scores [N], class_ids [N] int -> (indices [max_output] int32 padded with -1,
    count): the union of every class's kept boxes ordered by decreasing score, truncated to
    max_output (the same set as matterport's per-class NMS followed by top-k). Boxes scored
    -inf are never kept (mask background / low-confidence rows that way).
    """
    boxes, scores = _nms_inputs(boxes, scores)
    class_ids = ops.cast(ops.convert_to_tensor(class_ids), "int32")
    max_output = int(max_output)
    if _static_length(scores) == 0:
        return _empty_result(max_output)
    if use_fast_path:
        fast = backend.nms(_class_offset_boxes(boxes, class_ids), scores, iou_threshold,
                           max_output)
        if fast is not None:
            return fast
    return _greedy_nms(boxes, scores, class_ids, iou_threshold, max_output)


def nms_batched(boxes, scores, iou_threshold, max_output, use_fast_path=True):
    """nms for each image: boxes [B, N, 4], scores [B, N] -> (indices [B, max_output] int32
    padded with -1, counts [B] int32). Indices point into each image's own N boxes."""
    boxes, scores = _nms_inputs(boxes, scores)
    max_output = int(max_output)
    if scores.shape[-1] == 0:
        return _empty_result(max_output, (ops.shape(scores)[0],))

    def one_image(image_boxes, image_scores):
        return nms(image_boxes, image_scores, iou_threshold, max_output, use_fast_path)

    mapped = backend.nms_batched(boxes, scores, iou_threshold, max_output, one_image)
    if mapped is not None:
        return mapped
    results = [one_image(boxes[i], scores[i]) for i in range(int(scores.shape[0]))]
    return (ops.stack([r[0] for r in results]), ops.stack([r[1] for r in results]))
