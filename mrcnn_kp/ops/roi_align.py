"""ROIAlign (He et al. 2017) with torchvision's exact semantics, and its FPN pyramid version.

Every output bin averages sampling_ratio x sampling_ratio bilinear samples placed at the
centres of a regular sub-grid of the bin. aligned=True shifts the box by -0.5 feature pixels
(pixel centres at integer coordinates, detectron2's ROIAlignV2); aligned=False is the legacy
behaviour, which also widens boxes thinner than one feature pixel to 1. Sampling follows
torchvision's bilinear_interpolate: a sample further than one pixel outside the map counts as
0, a sample within one pixel of the border reads the border.

Implementation: the feature maps are flattened into one [rows, C] table (all pyramid levels
concatenated), and each corner of each sample is one row index into it, so every box of every
level is sampled by 4 gathers with static shapes and no loop over boxes or levels.
"""
from keras import ops

CANONICAL_SIZE = 224.0  # FPN paper: a 224 x 224 box maps to level 4
CANONICAL_LEVEL = 4
MIN_LEVEL, MAX_LEVEL = 2, 5


def _pair(size):
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _sample_axis(start, length, bins, sampling_ratio, size):
    """Bilinear taps of the samples along one axis.

    start, length [N] (box start and extent in feature pixels), size [N] (map side, float) ->
    low, high [N, bins * sampling_ratio] int32 rows, w_low, w_high [N, bins * sampling_ratio]
    weights (0 for samples more than one pixel outside the map).
    """
    steps = (ops.cast(ops.arange(bins * sampling_ratio), "float32") + 0.5) / sampling_ratio
    pos = start[:, None] + steps[None, :] * (length / bins)[:, None]  # [N, S]
    size = size[:, None]  # [N, 1]
    inside = ops.cast((pos >= -1.0) & (pos <= size), "float32")
    pos = ops.maximum(pos, 0.0)
    low = ops.floor(pos)
    at_end = low >= size - 1.0
    low = ops.where(at_end, size - 1.0, low)
    high = ops.where(at_end, size - 1.0, low + 1.0)
    frac = ops.where(at_end, 0.0, pos - low)
    return (ops.cast(low, "int32"), ops.cast(high, "int32"),
            (1.0 - frac) * inside, frac * inside)


def _align_from_table(table, boxes, row_offset, height, width, scale, output_size,
                      sampling_ratio, aligned):
    """ROIAlign of N boxes, each from its own map inside `table`.

    table [T, C]: maps flattened row-major; boxes [N, 4] input pixels; row_offset [N] int32 first
    row of the box's (level, image) map; height, width, scale [N] float: that map's size and
    input-to-feature scale. -> [N, out_h, out_w, C]
    """
    out_h, out_w = output_size
    offset = 0.5 if aligned else 0.0
    x1 = boxes[:, 0] * scale - offset
    y1 = boxes[:, 1] * scale - offset
    box_w = boxes[:, 2] * scale - offset - x1
    box_h = boxes[:, 3] * scale - offset - y1
    if not aligned:  # legacy: boxes at least one feature pixel wide
        box_w = ops.maximum(box_w, 1.0)
        box_h = ops.maximum(box_h, 1.0)
    y_lo, y_hi, wy_lo, wy_hi = _sample_axis(y1, box_h, out_h, sampling_ratio, height)  # [N, Sy]
    x_lo, x_hi, wx_lo, wx_hi = _sample_axis(x1, box_w, out_w, sampling_ratio, width)  # [N, Sx]
    row_width = ops.cast(width, "int32")[:, None, None]  # [N, 1, 1]
    base = row_offset[:, None, None]  # [N, 1, 1]

    total = 0.0
    for rows, wy in ((y_lo, wy_lo), (y_hi, wy_hi)):
        for cols, wx in ((x_lo, wx_lo), (x_hi, wx_hi)):
            index = base + rows[:, :, None] * row_width + cols[:, None, :]  # [N, Sy, Sx]
            weight = wy[:, :, None] * wx[:, None, :]  # [N, Sy, Sx]
            total = total + ops.take(table, index, axis=0) * weight[..., None]  # [N, Sy, Sx, C]
    channels = ops.shape(table)[-1]
    total = ops.reshape(total, (-1, out_h, sampling_ratio, out_w, sampling_ratio, channels))
    return ops.mean(total, axis=(2, 4))  # [N, out_h, out_w, C]


def roi_align(features, boxes, box_indices, output_size, spatial_scale, sampling_ratio=2,
              aligned=True):
    """torchvision.ops.roi_align for channels-last maps -> [N, out_h, out_w, C].

    features: [B, H, W, C]; boxes: [N, 4] (x1, y1, x2, y2) in input pixels; box_indices: [N]
    int image of each box; spatial_scale: feature pixels per input pixel (1 / stride);
    sampling_ratio: samples per bin side (> 0; the adaptive mode has no static shape).
    """
    if int(sampling_ratio) <= 0:
        raise ValueError(f"sampling_ratio must be a positive integer (static shapes), got "
                         f"{sampling_ratio}")
    features = ops.convert_to_tensor(features)
    boxes = ops.cast(ops.convert_to_tensor(boxes), "float32")
    box_indices = ops.cast(ops.convert_to_tensor(box_indices), "int32")
    _, height, width, channels = ops.shape(features)
    table = ops.reshape(features, (-1, channels))  # [B*H*W, C]
    ones = ops.ones_like(boxes[:, 0])  # [N]
    return _align_from_table(table, boxes, box_indices * (height * width), ones * height,
                             ones * width, ones * spatial_scale, _pair(output_size),
                             int(sampling_ratio), aligned)


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


def pyramid_roi_align(features, boxes, box_indices, output_size, image_size, sampling_ratio=2,
                      aligned=True):
    """Multi-level ROIAlign: each box is pooled from the FPN level its size selects.

    features: list of [B, H_l, W_l, C] maps for P2, P3, ... (consecutive levels from 2);
    boxes: [N, 4] (x1, y1, x2, y2) in image pixels; box_indices: [N] int image of each box;
    image_size: (height, width) of the image the boxes live in (the stride of level l is
    image_size / map size). Returns [N, out_h, out_w, C] in the input box order.
    """
    if int(sampling_ratio) <= 0:
        raise ValueError(f"sampling_ratio must be a positive integer (static shapes), got "
                         f"{sampling_ratio}")
    boxes = ops.cast(ops.convert_to_tensor(boxes), "float32")
    box_indices = ops.cast(ops.convert_to_tensor(box_indices), "int32")
    image_h, image_w = _pair(image_size) if not isinstance(image_size, int) else (image_size,
                                                                               image_size)
    features = [ops.convert_to_tensor(f) for f in features]
    channels = ops.shape(features[0])[-1]
    max_level = MIN_LEVEL + len(features) - 1
    level = fpn_levels(boxes, MIN_LEVEL, max_level) - MIN_LEVEL  # [N] 0-based level

    # Per level: first table row, map size and scale; then pick each box's values.
    starts, heights, widths, scales_y, scales_x = [], [], [], [], []
    start = 0
    for f in features:
        batch, h, w, _ = f.shape
        starts.append(start)
        heights.append(float(h))
        widths.append(float(w))
        scales_y.append(h / image_h)
        scales_x.append(w / image_w)
        start += batch * h * w
    if any(abs(sy - sx) > 1e-6 for sy, sx in zip(scales_y, scales_x)):
        raise ValueError(f"feature maps must have the same stride along y and x; got scales "
                         f"{scales_y} and {scales_x} for image size {(image_h, image_w)}")
    table = ops.concatenate([ops.reshape(f, (-1, channels)) for f in features], axis=0)

    def pick(values, dtype="float32"):
        return ops.take(ops.convert_to_tensor(values, dtype=dtype), level, axis=0)  # [N]

    height, width = pick(heights), pick(widths)
    row_offset = pick(starts, "int32") + box_indices * ops.cast(height * width, "int32")
    return _align_from_table(table, boxes, row_offset, height, width, pick(scales_y),
                             _pair(output_size), int(sampling_ratio), aligned)


def pyramid_roi_align_batched(features, boxes, output_size, image_size, sampling_ratio=2,
                              aligned=True):
    """pyramid_roi_align for per-image boxes [B, N, 4] -> [B, N, out_h, out_w, C]."""
    boxes = ops.cast(ops.convert_to_tensor(boxes), "float32")
    batch, num_boxes = ops.shape(boxes)[0], ops.shape(boxes)[1]
    box_indices = ops.repeat(ops.arange(batch, dtype="int32"), num_boxes)  # [B*N]
    pooled = pyramid_roi_align(features, ops.reshape(boxes, (-1, 4)), box_indices, output_size,
                               image_size, sampling_ratio, aligned)  # [B*N, h, w, C]
    out_h, out_w = _pair(output_size)
    return ops.reshape(pooled, (batch, num_boxes, out_h, out_w, ops.shape(pooled)[-1]))
