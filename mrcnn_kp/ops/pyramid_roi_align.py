"""Multi-level ROIAlign on an FPN: each box is pooled from the level its size selects.

    pyramid_roi_align(features, boxes, box_indices, output_size, image_size)  # [N, h, w, C]
    pyramid_roi_align_batched(features, boxes, output_size, image_size)       # [B, N, h, w, C]

Levels follow the FPN paper's rule as torchvision applies it (fpn_levels), or matterport's
PyramidROIAlign rule (matterport_levels, mode "crop_and_resize", which also pools with
tf.image.crop_and_resize's samples on matterport's normalised boxes). The sampling itself is
ops.roi_align's (torchvision's roi_align semantics, the written-out gradient).

A map's border is where the image's map ends, not always where the tensor ends:
pyramid_roi_align's `extents` give each image's own extent on a larger canvas (torchvision
runs every image on its own size padded to 32; a fixed canvas holds it at the top-left). A
legacy (aligned=False) box thinner than a feature pixel at the image's bottom or right edge
is widened past that extent, and its samples there must read 0, as torchvision's do, not the
canvas beyond.

Implementation (keras.ops): the feature maps of all pyramid levels are flattened into one
[rows, C] table, and each box's level picks its first row, map size and scale, so every box
of every level is sampled by 4 gathers with static shapes and no loop over boxes or levels.
XLA and JAX fuse those gathers; TensorFlow without XLA would run each gather, multiply and add
as its own pass over memory, so there the pooling is compiled on its own (backend.fused).
"""
from keras import ops

from mrcnn_kp.ops import backend
from mrcnn_kp.ops import matterport as matterport_ops
from mrcnn_kp.ops.roi_align import (CROP_AND_RESIZE, TORCHVISION, as_pair, check_sampling_ratio,
                                    corner_taps, crop_and_resize_from_table,
                                    pool_bins_from_table, sample_grid)

CANONICAL_SIZE = 224.0  # FPN paper: a 224 x 224 box maps to level 4
CANONICAL_LEVEL = 4
MIN_LEVEL, MAX_LEVEL = 2, 5
# The pooling modes of pyramid_roi_align (ops.roi_align's sampling rules at the map border)
MODES = (TORCHVISION, CROP_AND_RESIZE)


def _pool_pyramid(features, row_offset, height, width, grid, output_size, sampling_ratio,
                  border=TORCHVISION, extent=None):
    """Bins from the maps of every level flattened into one table -> [N, h, w, C]."""
    channels = ops.shape(features[0])[-1]
    table = ops.concatenate([ops.reshape(f, (-1, channels)) for f in features], axis=0)
    grid_size = (output_size[0] * sampling_ratio, output_size[1] * sampling_ratio)
    if border == CROP_AND_RESIZE:  # one sample per cell: nothing to average
        return crop_and_resize_from_table(table, row_offset, height, width, grid, grid_size)
    taps = corner_taps(row_offset, height, width, grid, grid_size, border, extent)
    return pool_bins_from_table(table, taps, output_size, sampling_ratio)


def fpn_levels(boxes, min_level=MIN_LEVEL, max_level=MAX_LEVEL):
    """FPN level of each box [..., 4] (input pixels) -> [...] int32.

    k = floor(4 + log2(sqrt(w * h) / 224)) clipped to [min_level, max_level]; like torchvision,
    1e-6 is added inside the floor so a box of exactly 224 * 2^n pixels is not pushed down by
    rounding. Zero-area boxes go to min_level.
    """
    boxes = ops.cast(ops.convert_to_tensor(boxes), "float32")
    w = ops.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    h = ops.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    side = ops.sqrt(w * h)
    level = ops.floor(CANONICAL_LEVEL + ops.log2(ops.maximum(side, 1e-6) / CANONICAL_SIZE)
                      + 1e-6)
    return ops.cast(ops.clip(level, float(min_level), float(max_level)), "int32")


def _normalised(boxes, image_size):
    """Pixel (x1, y1, x2, y2) [..., 4] -> matterport's normalised (y1, x1, y2, x2)."""
    image_h, image_w = as_pair(image_size)
    return ops.stack([boxes[..., 1] / (image_h - 1.0), boxes[..., 0] / (image_w - 1.0),
                      (boxes[..., 3] - 1.0) / (image_h - 1.0),
                      (boxes[..., 2] - 1.0) / (image_w - 1.0)], axis=-1)


def matterport_levels(boxes, image_size, min_level=MIN_LEVEL, max_level=MAX_LEVEL,
                      normalized_boxes=False):
    """matterport's PyramidROIAlign level of each pixel box [..., 4] -> [...] int32.

    clip(4 + round(log2(sqrt(h * w) / (224 / sqrt(H * W)))), 2, 5) with h, w of the box
    normalised matterport's way ((y2 - 1 - y1) / (H - 1)) and round half to even (tf.round).
    normalized_boxes: the boxes are matterport's normalised (y1, x1, y2, x2) already.
    """
    boxes = ops.cast(ops.convert_to_tensor(boxes), "float32")
    image_h, image_w = as_pair(image_size)
    if not normalized_boxes:
        boxes = _normalised(boxes, image_size)
    h = boxes[..., 2] - boxes[..., 0]
    w = boxes[..., 3] - boxes[..., 1]
    area = ops.maximum(h * w, 0.0)
    scale = CANONICAL_SIZE / (float(image_h * image_w) ** 0.5)
    level = ops.log2(ops.maximum(ops.sqrt(area), 1e-30) / scale)
    level = CANONICAL_LEVEL + ops.round(level)
    return ops.cast(ops.clip(level, float(min_level), float(max_level)), "int32")


def _crop_and_resize_grid(boxes, height, width, output_size):
    """tf.image.crop_and_resize's sample grid of matterport's normalised boxes.

    boxes [N, 4] normalised (y1, x1, y2, x2), height, width [N] the box's map size ->
    (first_y, step_y, first_x, step_x): sample k at y1n (H_l - 1) + k (y2n - y1n) (H_l - 1) /
    (c - 1), or at the centre (y1n + y2n) / 2 (H_l - 1) when c = 1.
    """
    out_h, out_w = output_size
    y1, x1, y2, x2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]

    def axis(lo, hi, size, count):
        if count == 1:
            return 0.5 * (lo + hi) * (size - 1.0), ops.zeros_like(lo)
        step = matterport_ops.divide_float32((hi - lo) * (size - 1.0), count - 1.0)
        return lo * (size - 1.0), step

    first_y, step_y = axis(y1, y2, height, out_h)
    first_x, step_x = axis(x1, x2, width, out_w)
    return first_y, step_y, first_x, step_x


def pyramid_roi_align(features, boxes, box_indices, output_size, image_size, sampling_ratio=2,
                      aligned=True, use_fast_path=True, mode=TORCHVISION,
                      normalized_boxes=False, extents=None):
    """Multi-level ROIAlign: each box is pooled from the FPN level its size selects.

    features: list of [B, H_l, W_l, C] maps for P2, P3, ... (consecutive levels from 2);
    boxes: [N, 4] (x1, y1, x2, y2) in image pixels; box_indices: [N] int image of each box;
    image_size: (height, width) of the image the boxes live in (the stride of level l is
    image_size / map size). Returns [N, out_h, out_w, C] in the input box order.
    use_fast_path=False forces the keras.ops version (the reference for backend fast paths).
    mode "crop_and_resize" reproduces matterport's PyramidROIAlign instead: its level rule
    (matterport_levels) and one tf.image.crop_and_resize sample per output cell on its
    normalised boxes (sampling_ratio and aligned are then unused). normalized_boxes (that mode
    only): the boxes are matterport's normalised (y1, x1, y2, x2) as its graph has them, not
    pixels; pixels normalised here can be 1 float32 ulp off, enough to move a sample on a far
    edge (y2 = 1) to the other side of H - 1.
    extents: [B, 2] (height, width) image pixels of each image's region at the canvas'
    top-left (torchvision: its size padded to 32), the border that sampling sees on every
    level (mode "roi_align"); None: the whole map.
    """
    if mode not in MODES:
        raise ValueError(f"unknown ROI pooling mode {mode!r}; choose one of {', '.join(MODES)}")
    if normalized_boxes and mode != CROP_AND_RESIZE:
        raise ValueError("normalized_boxes needs mode 'crop_and_resize'")
    if extents is not None and mode != TORCHVISION:
        raise ValueError("extents needs mode 'roi_align'")
    sampling_ratio = check_sampling_ratio(sampling_ratio)
    output_size = as_pair(output_size)
    boxes = ops.cast(ops.convert_to_tensor(boxes), "float32")
    box_indices = ops.cast(ops.convert_to_tensor(box_indices), "int32")
    image_h, image_w = as_pair(image_size)
    features = [ops.convert_to_tensor(f) for f in features]
    channels = ops.shape(features[0])[-1]
    max_level = MIN_LEVEL + len(features) - 1
    if mode == CROP_AND_RESIZE:
        if not normalized_boxes:
            boxes = _normalised(boxes, (image_h, image_w))  # [N, 4] (y1, x1, y2, x2)
        level = matterport_levels(boxes, (image_h, image_w), MIN_LEVEL, max_level,
                                  normalized_boxes=True) - MIN_LEVEL
    else:
        level = fpn_levels(boxes, MIN_LEVEL, max_level) - MIN_LEVEL  # [N] 0-based level

    # Per level: first table row, map size and scale; then pick each box's values.
    starts, heights, widths, scales_y, scales_x = [], [], [], [], []
    start = 0
    for f in features:
        _, h, w, _ = f.shape  # static map sizes; the batch may be symbolic
        starts.append(start)
        heights.append(float(h))
        widths.append(float(w))
        scales_y.append(h / image_h)
        scales_x.append(w / image_w)
        start = start + ops.shape(f)[0] * h * w
    if any(abs(sy - sx) > 1e-6 for sy, sx in zip(scales_y, scales_x)):
        raise ValueError(f"feature maps must have the same stride along y and x; got scales "
                         f"{scales_y} and {scales_x} for image size {(image_h, image_w)}")

    def pick(values, dtype="float32"):  # per-level values -> [N], each box's level's value
        return ops.take(ops.stack([ops.cast(v, dtype) for v in values]), level, axis=0)

    height, width = pick(heights), pick(widths)
    row_offset = pick(starts, "int32") + box_indices * ops.cast(height * width, "int32")
    extent = None
    if mode == CROP_AND_RESIZE:
        grid = _crop_and_resize_grid(boxes, height, width, output_size)
        sampling_ratio = 1
    else:
        scale = pick(scales_y)
        grid = sample_grid(boxes, scale, output_size, sampling_ratio, aligned)
        if extents is not None:  # [N] rows, cols of the box's image on its level's map
            image_extent = ops.take(ops.cast(extents, "float32"), box_indices, axis=0)  # [N, 2]
            extent = (ops.minimum(ops.ceil(image_extent[:, 0] * scale), height),
                      ops.minimum(ops.ceil(image_extent[:, 1] * scale), width))
    # crop_and_resize: no XLA fusion. XLA rewrites the grid's float32 maths (x / c as
    # x * (1 / c)), which moves samples on a box's far edge (y2 = 1, every box clipped to the
    # image) just past H - 1, where tf.image.crop_and_resize's arithmetic keeps them inside;
    # such a sample would read 0 instead of the border (JAX, always compiled, can do this).
    fuse = use_fast_path and mode != CROP_AND_RESIZE
    pool = backend.fused(_pool_pyramid) if fuse else _pool_pyramid
    return pool(features, row_offset, height, width, grid, output_size, sampling_ratio, mode,
                extent)


def pyramid_roi_align_batched(features, boxes, output_size, image_size, sampling_ratio=2,
                              aligned=True, use_fast_path=True, mode=TORCHVISION,
                              normalized_boxes=False, extents=None):
    """pyramid_roi_align for per-image boxes [B, N, 4] -> [B, N, out_h, out_w, C]
    (extents [B, 2]: see pyramid_roi_align)."""
    boxes = ops.cast(ops.convert_to_tensor(boxes), "float32")
    batch, num_boxes = ops.shape(boxes)[0], ops.shape(boxes)[1]
    box_indices = ops.repeat(ops.arange(batch, dtype="int32"), num_boxes)  # [B*N]
    pooled = pyramid_roi_align(features, ops.reshape(boxes, (-1, 4)), box_indices, output_size,
                               image_size, sampling_ratio, aligned, use_fast_path,
                               mode, normalized_boxes, extents)  # [B*N, h, w, C]
    out_h, out_w = as_pair(output_size)
    return ops.reshape(pooled, (batch, num_boxes, out_h, out_w, ops.shape(pooled)[-1]))
