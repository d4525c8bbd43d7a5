"""matterport's normalised box maths, for the matterport compatibility preset.

matterport (Mask_RCNN, docs/MATTERPORT.md) runs its proposal and detection layers on
boxes (y1, x1, y2, x2) normalised with `norm_boxes`: (box - [0, 0, 1, 1]) / [H-1, W-1, H-1, W-1],
so a pixel y2/x2 is exclusive and a normalised one inclusive. Our layers exchange pixel boxes
(x1, y1, x2, y2) (docs/DESIGN.md); with PROPOSAL_MODE / DETECTION_MODE "matterport" they
convert to these coordinates, do matterport's maths here in float32, and convert back
(`to_pixels`, unrounded, the inverse of `from_pixels`). The matterport ROI pooling
(ops.pyramid_roi_align, mode "crop_and_resize") normalises pixel boxes the same way.

Unlike ops.boxes.decode_deltas, `apply_box_deltas` caps nothing (matterport's
apply_box_deltas_graph) and computes y2 as y1 + h.
"""
import functools

import keras
import numpy as np
from keras import ops

from mrcnn_kp.ops import anchors as anchor_ops

SHIFT = (0.0, 0.0, 1.0, 1.0)


def _hw(image_shape):
    return float(image_shape[0]), float(image_shape[1])


# ------------------------------------------------------------------ numpy (pre/post-processing)
def norm_boxes_numpy(boxes, image_shape):
    """matterport utils.norm_boxes: pixel (y1, x1, y2, x2) [..., 4] -> normalised float32."""
    h, w = _hw(image_shape)
    scale = np.array([h - 1, w - 1, h - 1, w - 1])
    return np.divide(np.asarray(boxes) - np.array(SHIFT), scale).astype(np.float32)


def denorm_boxes_numpy(boxes, image_shape):
    """matterport utils.denorm_boxes: normalised (y1, x1, y2, x2) -> int32 pixels (rounded,
    half to even, as np.around)."""
    h, w = _hw(image_shape)
    scale = np.array([h - 1, w - 1, h - 1, w - 1])
    return np.around(np.multiply(boxes, scale) + np.array(SHIFT)).astype(np.int32)


@functools.lru_cache(maxsize=8)
def _normalized_anchors(scales, ratios, feature_shapes, feature_strides, anchor_stride,
                        image_shape):
    levels = [anchor_ops.generate_anchors(s, ratios, shape, stride, anchor_stride)
              for s, shape, stride in zip(scales, feature_shapes, feature_strides)]
    xyxy = np.concatenate(levels, axis=0)  # float64 pixels, like matterport's utils
    anchors = norm_boxes_numpy(xyxy[:, [1, 0, 3, 2]], image_shape)  # [A, 4] (y1, x1, y2, x2)
    anchors.setflags(write=False)
    return anchors


def normalized_anchors(config):
    """matterport's model.get_anchors: the pyramid anchors (same order and geometry as
    ops.anchors.generate_pyramid_anchors), normalised from float64 pixels -> float32 [A, 4]
    (y1, x1, y2, x2), not clipped. Read-only and cached."""
    anchors = _normalized_anchors(
        tuple(float(s) for s in config.RPN_ANCHOR_SCALES),
        tuple(float(r) for r in config.RPN_ANCHOR_RATIOS),
        tuple(tuple(int(v) for v in shape) for shape in config.BACKBONE_SHAPES),
        tuple(int(s) for s in config.BACKBONE_STRIDES), int(config.RPN_ANCHOR_STRIDE),
        tuple(int(v) for v in config.IMAGE_SHAPE[:2]))
    if len(anchors) != config.NUM_ANCHORS:
        raise ValueError(f"generated {len(anchors)} anchors but config.NUM_ANCHORS is "
                         f"{config.NUM_ANCHORS}")
    return anchors


# ------------------------------------------------------------------ keras.ops (the model)
def divide_float32(numerator, denominator):
    """numerator / denominator rounded as one float32 division, even in a TensorFlow graph.

    TensorFlow's graph optimiser turns a division by a constant into a multiplication by its
    rounded reciprocal, 1 ulp off in places; matterport's graph divides by values it reads
    from image_meta, which stay divisions. 1 ulp decides whether a box clipped to the window
    and a tf.image.crop_and_resize sample on a far edge read the border or 0. On TensorFlow
    the division runs in float64 and is rounded once (exactly the float32 quotient: double
    rounding cannot hurt a quotient of float32 numbers); other backends divide in float32.
    """
    if keras.backend.backend() != "tensorflow":
        return numerator / denominator
    wide = ops.cast(numerator, "float64") / ops.cast(ops.convert_to_tensor(denominator),
                                                     "float64")
    return ops.cast(wide, "float32")


def from_pixels(boxes, image_shape):
    """Pixel (x1, y1, x2, y2) [..., 4] -> matterport-normalised (y1, x1, y2, x2), float32."""
    h, w = _hw(image_shape)
    boxes = ops.cast(boxes, "float32")
    return ops.stack([boxes[..., 1] / (h - 1.0), boxes[..., 0] / (w - 1.0),
                      (boxes[..., 3] - 1.0) / (h - 1.0), (boxes[..., 2] - 1.0) / (w - 1.0)],
                     axis=-1)


def to_pixels(boxes, image_shape):
    """Normalised (y1, x1, y2, x2) [..., 4] -> pixel (x1, y1, x2, y2), unrounded float32
    (matterport's denorm_boxes before its rounding); normalised zeros become (0, 0, 1, 1)."""
    h, w = _hw(image_shape)
    boxes = ops.cast(boxes, "float32")
    return ops.stack([boxes[..., 1] * (w - 1.0), boxes[..., 0] * (h - 1.0),
                      boxes[..., 3] * (w - 1.0) + 1.0, boxes[..., 2] * (h - 1.0) + 1.0],
                     axis=-1)


def window_from_meta(window, image_shape):
    """image_meta's pixel window (y1, x1, y2, x2) [..., 4] -> normalised, as norm_boxes."""
    h, w = _hw(image_shape)
    window = ops.cast(window, "float32")
    scale = ops.convert_to_tensor([h - 1.0, w - 1.0, h - 1.0, w - 1.0], "float32")
    return divide_float32(window - ops.convert_to_tensor(SHIFT, "float32"), scale)


def apply_box_deltas(boxes, deltas):
    """matterport apply_box_deltas_graph on normalised (y1, x1, y2, x2) [..., 4] with deltas
    (dy, dx, log dh, log dw) already multiplied by the std; no cap on the log-scales."""
    height = boxes[..., 2] - boxes[..., 0]
    width = boxes[..., 3] - boxes[..., 1]
    center_y = boxes[..., 0] + 0.5 * height
    center_x = boxes[..., 1] + 0.5 * width
    center_y = center_y + deltas[..., 0] * height
    center_x = center_x + deltas[..., 1] * width
    height = height * ops.exp(deltas[..., 2])
    width = width * ops.exp(deltas[..., 3])
    y1 = center_y - 0.5 * height
    x1 = center_x - 0.5 * width
    return ops.stack([y1, x1, y1 + height, x1 + width], axis=-1)


def clip_boxes(boxes, window):
    """matterport clip_boxes_graph: each coordinate max(min(v, w2), w1); window (y1, x1, y2, x2)
    broadcasts with boxes [..., 4]."""
    y1 = ops.maximum(ops.minimum(boxes[..., 0], window[..., 2]), window[..., 0])
    x1 = ops.maximum(ops.minimum(boxes[..., 1], window[..., 3]), window[..., 1])
    y2 = ops.maximum(ops.minimum(boxes[..., 2], window[..., 2]), window[..., 0])
    x2 = ops.maximum(ops.minimum(boxes[..., 3], window[..., 3]), window[..., 1])
    return ops.stack([y1, x1, y2, x2], axis=-1)
