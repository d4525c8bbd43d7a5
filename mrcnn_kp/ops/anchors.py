"""Matterport's pyramid anchors, in pixels (x1, y1, x2, y2).

One scale per pyramid level P2..P6, every ratio at every grid cell. The order is matterport's
(level, then row, then column, then ratio fastest), so anchor i lines up with output row i of
the RPN, and the geometry is matterport's (h = s / sqrt(r), w = s * sqrt(r), centres at the
top-left cell corner (x * stride, y * stride), no half-stride offset, not clipped).
With round_half_sizes (config.LAYOUT "torchvision") the half width and half height are rounded
to whole pixels, as torchvision's AnchorGenerator rounds its base anchors; list the ratios in
torchvision's order (its aspect ratios are height / width, ours width / height).
"""
import functools

import numpy as np


def generate_anchors(scale, ratios, feature_shape, feature_stride, anchor_stride=1,
                     round_half_sizes=False):
    """Anchors of one pyramid level -> float64 [rows * cols * len(ratios), 4] (x1, y1, x2, y2).

    scale: anchor side in pixels; ratios: width / height; feature_shape: (rows, cols) of the
    level; feature_stride: image pixels per feature cell; anchor_stride: anchors every n cells.
    """
    ratios = np.asarray(ratios, dtype=np.float64)  # [R]
    heights = scale / np.sqrt(ratios)  # [R]
    widths = scale * np.sqrt(ratios)  # [R]
    centre_y = np.arange(0, feature_shape[0], anchor_stride) * feature_stride  # [rows]
    centre_x = np.arange(0, feature_shape[1], anchor_stride) * feature_stride  # [cols]
    cy = centre_y[:, None, None]  # [rows, 1, 1]
    cx = centre_x[None, :, None]  # [1, cols, 1]
    half_h, half_w = 0.5 * heights, 0.5 * widths  # [R]
    if round_half_sizes:
        half_h, half_w = np.round(half_h), np.round(half_w)
    h = half_h[None, None, :]  # [1, 1, R]
    w = half_w[None, None, :]  # [1, 1, R]
    full = (len(centre_y), len(centre_x), len(ratios))
    boxes = np.stack([np.broadcast_to(cx - w, full), np.broadcast_to(cy - h, full),
                      np.broadcast_to(cx + w, full), np.broadcast_to(cy + h, full)],
                     axis=-1)  # [rows, cols, R, 4]
    return boxes.reshape(-1, 4)


@functools.lru_cache(maxsize=16)
def _pyramid_anchors(scales, ratios, feature_shapes, feature_strides, anchor_stride,
                     round_half_sizes=False):
    levels = [generate_anchors(s, ratios, shape, stride, anchor_stride, round_half_sizes)
              for s, shape, stride in zip(scales, feature_shapes, feature_strides)]
    anchors = np.concatenate(levels, axis=0).astype(np.float32)  # [A, 4]
    anchors.setflags(write=False)  # cached and shared: nobody may edit it in place
    return anchors


def generate_pyramid_anchors(config):
    """All anchors of config, float32 [config.NUM_ANCHORS, 4] pixel (x1, y1, x2, y2).

    Cached per (scales, ratios, feature shapes, strides, anchor stride); the returned array is
    read-only (copy it before editing).
    """
    anchors = _pyramid_anchors(
        tuple(float(s) for s in config.RPN_ANCHOR_SCALES),
        tuple(float(r) for r in config.RPN_ANCHOR_RATIOS),
        tuple(tuple(int(v) for v in shape) for shape in config.BACKBONE_SHAPES),
        tuple(int(s) for s in config.BACKBONE_STRIDES),
        int(config.RPN_ANCHOR_STRIDE),
        getattr(config, "LAYOUT", "matterport") == "torchvision",
    )
    if len(anchors) != config.NUM_ANCHORS:
        raise ValueError(f"generated {len(anchors)} anchors but config.NUM_ANCHORS is "
                         f"{config.NUM_ANCHORS}")
    return anchors


def level_anchor_counts(config):
    """Number of anchors of each pyramid level P2..P6, in order (for slicing per level)."""
    per_location = len(config.RPN_ANCHOR_RATIOS)
    stride = config.RPN_ANCHOR_STRIDE
    return tuple(int(-(-h // stride) * -(-w // stride) * per_location)
                 for h, w in config.BACKBONE_SHAPES)
