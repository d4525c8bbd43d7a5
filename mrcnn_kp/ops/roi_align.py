"""ROIAlign (He et al. 2017) with torchvision's exact semantics, on one map per image, and the
sampling kernels that ops.pyramid_roi_align runs on every FPN level at once.

Every output bin averages sampling_ratio x sampling_ratio bilinear samples placed at the
centres of a regular sub-grid of the bin. aligned=True shifts the box by -0.5 feature pixels
(pixel centres at integer coordinates, detectron2's ROIAlignV2); aligned=False is the legacy
behaviour, which also widens boxes thinner than one feature pixel to 1. Sampling follows
torchvision's bilinear_interpolate: a sample further than one pixel outside the map counts as
0, a sample within one pixel of the border reads the border. The border is where the image's
map ends (corner_taps' `extent`), not always where the tensor ends. crop_and_resize_from_table
samples as tf.image.crop_and_resize does instead (matterport's pooling).

Implementation (keras.ops): the feature maps are flattened into one [rows, C] table, and each
corner of each sample is one row index into it (corner_taps), so every box is sampled by 4
gathers with static shapes and no loop over boxes.

Gradient: to the feature maps only (the boxes are constants, as torchvision's roi_align has
no box gradient and Mask R-CNN's ROIs are stop_gradient'ed anyway). It is written out
(pool_bins_from_table) rather than left to autodiff: autodiff of the 4 corner gathers keeps
the gathered corners and builds the table's gradient from IndexedSlices as large as every
corner of every sample (N x Sy x Sx x 4 rows of C), ~6 such tensors at a peak; 512 training
ROIs of a 832 x 1088 image at sampling ratio 2 made that 2.6 GB of a 5.3 GB training step.
The written-out backward spreads each bin's gradient over its samples and scatter-adds the 4
corners' weighted shares into the table's (dense) gradient, GRADIENT_ROI_CHUNK ROIs at a time
(a loop), so that its intermediates do not grow with the ROI count.
"""
from keras import ops

from mrcnn_kp.ops import backend

# Sampling rules at the map border (and the pooling modes of ops.pyramid_roi_align)
TORCHVISION, CROP_AND_RESIZE = "roi_align", "crop_and_resize"


def as_pair(size):
    """An int or an (h, w) pair -> (h, w) python ints."""
    if not hasattr(size, "__len__"):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def sample_grid(boxes, scale, output_size, sampling_ratio, aligned):
    """Where the samples of each box lie on its feature map: a regular grid per box.

    boxes [N, 4] input pixels, scale [N] (or a number) feature pixels per input pixel ->
    first_y, step_y, first_x, step_x [N]: sample k along y is at first_y + k * step_y feature
    pixels, k < out_h * sampling_ratio (torchvision: roi_start + (k + 0.5) * bin / ratio).
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
    step_y = box_h / (out_h * sampling_ratio)
    step_x = box_w / (out_w * sampling_ratio)
    return y1 + 0.5 * step_y, step_y, x1 + 0.5 * step_x, step_x


def _bilinear_taps(first, step, count, size, border=TORCHVISION):
    """Bilinear taps of `count` samples first + k * step along one axis of a map of `size`.

    first, step, size [N] -> low, high [N, count] int32 rows, w_low, w_high [N, count].
    border TORCHVISION (bilinear_interpolate): 0 more than one pixel outside the map, the
    border value within one pixel of it. CROP_AND_RESIZE (tf.image.crop_and_resize with
    extrapolation_value 0): 0 anywhere outside [0, size - 1].
    """
    pos = first[:, None] + ops.cast(ops.arange(count), "float32")[None, :] * step[:, None]
    size = size[:, None]  # [N, 1]
    if border == TORCHVISION:
        inside = ops.cast((pos >= -1.0) & (pos <= size), "float32")
        pos = ops.maximum(pos, 0.0)
    else:
        inside = ops.cast((pos >= 0.0) & (pos <= size - 1.0), "float32")
        pos = ops.clip(pos, 0.0, size - 1.0)
    low = ops.floor(pos)
    at_end = low >= size - 1.0
    low = ops.where(at_end, size - 1.0, low)
    high = ops.where(at_end, size - 1.0, low + 1.0)
    frac = ops.where(at_end, 0.0, pos - low)
    return (ops.cast(low, "int32"), ops.cast(high, "int32"),
            (1.0 - frac) * inside, frac * inside)


def corner_taps(row_offset, height, width, grid, grid_size, border=TORCHVISION, extent=None):
    """The 4 bilinear corners of every sample of every box's grid: [(index [N, Sy, Sx] int32
    table rows, weight [N, Sy, Sx])] x 4, constants (no gradient to the boxes).

    row_offset [N] int32 first row of the box's (level, image) map in the flattened table;
    height, width [N] float its size; grid = (first_y, step_y, first_x, step_x) [N] each;
    grid_size (rows, cols); border: see _bilinear_taps; extent: (rows, cols) [N] each, where
    the box's image ends on its map (<= height, width), the border that sampling sees
    (default: the whole map).
    """
    first_y, step_y, first_x, step_x = (ops.stop_gradient(g) for g in grid)
    rows_seen, cols_seen = (height, width) if extent is None else extent
    y_lo, y_hi, wy_lo, wy_hi = _bilinear_taps(first_y, step_y, grid_size[0], rows_seen, border)
    x_lo, x_hi, wx_lo, wx_hi = _bilinear_taps(first_x, step_x, grid_size[1], cols_seen, border)
    row_width = ops.cast(width, "int32")[:, None, None]  # [N, 1, 1]
    base = row_offset[:, None, None]  # [N, 1, 1]
    taps = []
    for rows, wy in ((y_lo, wy_lo), (y_hi, wy_hi)):
        for cols, wx in ((x_lo, wx_lo), (x_hi, wx_hi)):
            index = base + rows[:, :, None] * row_width + cols[:, None, :]  # [N, Sy, Sx]
            weight = wy[:, :, None] * wx[:, None, :]  # [N, Sy, Sx]
            taps.append((index, ops.stop_gradient(weight)))
    return taps


def _gather_samples(table, taps):
    """table [T, C] -> the bilinear samples [N, Sy, Sx, C] of corner_taps."""
    total = 0.0
    for index, weight in taps:
        total = total + ops.take(table, index, axis=0) * weight[..., None]  # [N, Sy, Sx, C]
    return total


# The written-out gradient handles this many ROIs at a time, adding into one table gradient:
# its intermediates ([ROIs x samples x 4 corners, C] weighted values) stay ~50 MB at 64 ROIs
# of 14 x 14 samples and 256 channels instead of growing with the ROI count (512 ROIs: 400 MB;
# training step at 800 x 1067: 3709 -> 3256 MiB, docs/RESULTS.md).
GRADIENT_ROI_CHUNK = 64


def pool_bins_from_table(table, taps, output_size, sampling_ratio):
    """_average_bins(_gather_samples(table, taps)) -> [N, out_h, out_w, C], with the gradient
    to table written out (see the module docstring): d table = sum over corners of
    scatter-add(weight * d bin / ratio^2 at each of the bin's samples, index), GRADIENT_ROI_CHUNK
    ROIs at a time."""
    ratio = sampling_ratio

    @ops.custom_gradient
    def pool(table):
        pooled = _average_bins(_gather_samples(table, taps), output_size, ratio)

        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream  # [N, out_h, out_w, C]
            d_table = _table_gradient(upstream, taps, ops.shape(table)[0], ratio)
            return ops.cast(d_table, table.dtype)

        return pooled, grad

    return pool(table)


def _table_gradient(upstream, taps, rows, ratio):
    """d table [rows, C] of the pooled bins' gradient upstream [N, out_h, out_w, C]."""
    count, out_h, out_w, channels = ops.shape(upstream)
    upstream = ops.cast(upstream, "float32")
    index = ops.stack([i for i, _ in taps], axis=1)  # [N, 4, Sy, Sx]
    weight = ops.stack([w for _, w in taps], axis=1)  # [N, 4, Sy, Sx]
    chunk = GRADIENT_ROI_CHUNK
    if not isinstance(count, int) or count <= chunk:  # one piece (or a symbolic count)
        chunk, chunks = count, 1
    else:
        chunks = -(-count // chunk)
        pad = chunks * chunk - count  # zero gradient, row 0: adds nothing
        upstream = ops.pad(upstream, ((0, pad), (0, 0), (0, 0), (0, 0)))
        index = ops.pad(index, ((0, pad), (0, 0), (0, 0), (0, 0)))
        weight = ops.pad(weight, ((0, pad), (0, 0), (0, 0), (0, 0)))

    def add_chunk(d_table, bins, rows_of, weights):
        # bins [n, out_h, out_w, C] -> each sample's share per_sample [n, Sy, Sx, C]
        per_sample = bins / float(ratio * ratio)
        if ratio > 1:
            per_sample = ops.reshape(
                ops.broadcast_to(per_sample[:, :, None, :, None, :],
                                 (ops.shape(bins)[0], out_h, ratio, out_w, ratio, channels)),
                (-1, out_h * ratio, out_w * ratio, channels))
        values = per_sample[:, None] * weights[..., None]  # [n, 4, Sy, Sx, C]
        return backend.scatter_add_rows(d_table, ops.reshape(rows_of, (-1,)),
                                        ops.reshape(values, (-1, channels)))

    d_table = ops.zeros((rows, channels), "float32")
    if chunks == 1:
        return add_chunk(d_table, upstream, index, weight)

    def body(step, d_table):
        start = step * chunk
        sizes = ops.shape(index)[1:]
        return add_chunk(
            d_table, ops.slice(upstream, (start, 0, 0, 0), (chunk, out_h, out_w, channels)),
            ops.slice(index, (start, 0, 0, 0), (chunk,) + tuple(sizes)),
            ops.slice(weight, (start, 0, 0, 0), (chunk,) + tuple(sizes)))

    # a loop, not unrolled: unrolled, XLA schedules every chunk's values at once (measured)
    return ops.fori_loop(0, chunks, body, d_table)


def crop_and_resize_from_table(table, row_offset, height, width, grid, grid_size):
    """tf.image.crop_and_resize's bilinear samples, with its own arithmetic, so the values are
    the kernel's to the bit: top = tl + (tr - tl) * x_lerp, bottom likewise, then
    top + (bottom - top) * y_lerp; samples outside [0, H - 1] are 0 -> [N, rows, cols, C]."""
    first_y, step_y, first_x, step_x = grid

    def taps(first, step, count, size):
        pos = first[:, None] + ops.cast(ops.arange(count), "float32")[None, :] * step[:, None]
        size = size[:, None]
        inside = ops.logical_and(pos >= 0.0, pos <= size - 1.0)
        pos = ops.clip(pos, 0.0, size - 1.0)
        low = ops.floor(pos)
        return (ops.cast(low, "int32"), ops.cast(ops.ceil(pos), "int32"), pos - low, inside)

    y_lo, y_hi, y_lerp, y_in = taps(first_y, step_y, grid_size[0], height)
    x_lo, x_hi, x_lerp, x_in = taps(first_x, step_x, grid_size[1], width)
    row_width = ops.cast(width, "int32")[:, None, None]  # [N, 1, 1]
    base = row_offset[:, None, None]  # [N, 1, 1]

    def corner(rows, cols):  # [N, Sy, Sx, C]
        return ops.take(table, base + rows[:, :, None] * row_width + cols[:, None, :], axis=0)

    x_lerp = x_lerp[:, None, :, None]  # [N, 1, Sx, 1]
    top_left = corner(y_lo, x_lo)
    top = top_left + (corner(y_lo, x_hi) - top_left) * x_lerp
    bottom_left = corner(y_hi, x_lo)
    bottom = bottom_left + (corner(y_hi, x_hi) - bottom_left) * x_lerp
    values = top + (bottom - top) * y_lerp[:, :, None, None]
    inside = ops.logical_and(y_in[:, :, None], x_in[:, None, :])[..., None]  # [N, Sy, Sx, 1]
    return ops.where(inside, values, 0.0)


def _average_bins(samples, output_size, sampling_ratio):
    """[N, out_h * r, out_w * r, C] samples -> [N, out_h, out_w, C] bin means."""
    out_h, out_w = output_size
    channels = ops.shape(samples)[-1]
    samples = ops.reshape(samples, (-1, out_h, sampling_ratio, out_w, sampling_ratio, channels))
    return ops.mean(samples, axis=(2, 4))


def check_sampling_ratio(sampling_ratio):
    if int(sampling_ratio) <= 0:
        raise ValueError(f"sampling_ratio must be a positive integer (static shapes), got "
                         f"{sampling_ratio}")
    return int(sampling_ratio)


def roi_align(features, boxes, box_indices, output_size, spatial_scale, sampling_ratio=2,
              aligned=True):
    """torchvision.ops.roi_align for channels-last maps -> [N, out_h, out_w, C].

    features: [B, H, W, C]; boxes: [N, 4] (x1, y1, x2, y2) in input pixels; box_indices: [N]
    int image of each box; spatial_scale: feature pixels per input pixel (1 / stride);
    sampling_ratio: samples per bin side (> 0; the adaptive mode has no static shape).
    """
    sampling_ratio = check_sampling_ratio(sampling_ratio)
    output_size = as_pair(output_size)
    features = ops.convert_to_tensor(features)
    boxes = ops.cast(ops.convert_to_tensor(boxes), "float32")
    box_indices = ops.cast(ops.convert_to_tensor(box_indices), "int32")
    _, height, width, channels = ops.shape(features)
    grid = sample_grid(boxes, spatial_scale, output_size, sampling_ratio, aligned)
    grid_size = (output_size[0] * sampling_ratio, output_size[1] * sampling_ratio)
    ones = ops.ones_like(boxes[:, 0])  # [N]
    taps = corner_taps(box_indices * (height * width), ones * height, ones * width, grid,
                        grid_size)
    return pool_bins_from_table(ops.reshape(features, (-1, channels)), taps, output_size,
                                 sampling_ratio)
