"""Keypoints <-> the 56x56 heatmaps of the keypoint head.

encode_keypoints gives each joint the one cell of the roi's heatmap grid it falls in (the
training target of the softmax over cells), exactly as torchvision's keypoints_to_heatmap.

decode_heatmaps follows detectron2 / torchvision's heatmaps_to_keypoints: the logits are
conceptually resized with bicubic interpolation (align_corners=False, a = -0.75) to the roi's
size in pixels (ceil(w) x ceil(h), sides clamped to >= 1), the argmax pixel (i, j) is taken,
and x = x1 + (j + 0.5) * w / ceil(w), y likewise; the score is the resized logit there. The
resized map has a different size for every roi, so instead of materialising it we find the
argmax cell of the 56x56 logits and evaluate the same bicubic interpolant only at the
(2 * radius + 1)^2 roi pixels around that cell: the result equals torchvision's whenever its
argmax lies within that window (radius 16 covers +-1 heatmap cell for rois up to ~900 px).
Static shapes throughout.
"""
import numpy as np
from keras import ops

HEATMAP_SIZE = 56
BICUBIC_A = -0.75  # PyTorch's (and OpenCV's) cubic convolution constant


# ------------------------------------------------------------------ encoding (shared maths)
def _keypoint_cells(xp, keypoints, rois, heatmap_size):
    """Flat cell y * size + x of each joint and whether it is a valid target.

    keypoints [..., K, 3] (x, y, v), rois [..., 4] -> cell [..., K] float (0 where invalid),
    valid [..., K] bool.
    """
    x1, y1 = rois[..., 0:1], rois[..., 1:2]  # [..., 1]
    x2, y2 = rois[..., 2:3], rois[..., 3:4]
    width, height = x2 - x1, y2 - y1
    roi_ok = (width > 0) & (height > 0)  # [..., 1]; empty rois give no targets
    scale_x = heatmap_size / xp.where(width > 0, width, 1.0)
    scale_y = heatmap_size / xp.where(height > 0, height, 1.0)
    x, y, visibility = keypoints[..., 0], keypoints[..., 1], keypoints[..., 2]  # [..., K]
    cell_x = xp.floor((x - x1) * scale_x)
    cell_y = xp.floor((y - y1) * scale_y)
    # A joint exactly on the right / bottom edge belongs to the last cell.
    cell_x = xp.where(x == x2, heatmap_size - 1.0, cell_x)
    cell_y = xp.where(y == y2, heatmap_size - 1.0, cell_y)
    valid = (roi_ok & (visibility > 0) & (cell_x >= 0) & (cell_y >= 0)
             & (cell_x < heatmap_size) & (cell_y < heatmap_size))
    cell = xp.where(valid, cell_y * heatmap_size + cell_x, 0.0)
    return cell, valid


def encode_keypoints(keypoints, rois, heatmap_size=HEATMAP_SIZE):
    """One-hot heatmap targets: (targets [..., K] int32 in [0, size^2), valid [..., K] bool).

    keypoints: [..., K, 3] (x, y, v) in image pixels; rois: [..., 4] (x1, y1, x2, y2) in the
    same pixels, one per row of keypoints. A joint is valid when v > 0 and it lies inside the
    roi (a joint on the right / bottom edge belongs to the last cell); invalid targets are 0.
    """
    keypoints = ops.cast(ops.convert_to_tensor(keypoints), "float32")
    rois = ops.cast(ops.convert_to_tensor(rois), "float32")
    cell, valid = _keypoint_cells(ops, keypoints, rois, float(heatmap_size))
    return ops.cast(cell, "int32"), valid


def encode_keypoints_numpy(keypoints, rois, heatmap_size=HEATMAP_SIZE):
    """numpy twin of encode_keypoints (same lines of maths)."""
    keypoints = np.asarray(keypoints, np.float32)
    rois = np.asarray(rois, np.float32)
    cell, valid = _keypoint_cells(np, keypoints, rois, np.float32(heatmap_size))
    return cell.astype(np.int32), valid


# ------------------------------------------------------------------ decoding
def _cubic_weights(t):
    """Cubic-convolution weights of the 4 taps at offsets -1, 0, 1, 2 for fraction t [...]."""
    a = BICUBIC_A

    def near(d):  # |d| <= 1
        return ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0

    def far(d):  # 1 < |d| < 2
        return ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a

    return ops.stack([far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)], axis=-1)  # [..., 4]


def _candidate_pixels(cell, roi_pixels, heatmap_size, radius):
    """Roi-map pixels near `cell` and their bicubic taps into the heatmap, along one axis.

    cell [M] (argmax cell, float), roi_pixels [M] (ceil of the roi side, >= 1) ->
    pixels [M, P] float, taps [M, P, 4] int32 heatmap indices, weights [M, P, 4].
    """
    scale = heatmap_size / roi_pixels  # [M] heatmap cells per roi pixel
    centre = ops.round((cell + 0.5) / scale - 0.5)  # [M] roi pixel over the cell centre
    offsets = ops.cast(ops.arange(-radius, radius + 1), "float32")  # [P]
    pixels = ops.clip(centre[:, None] + offsets[None, :], 0.0, (roi_pixels - 1.0)[:, None])
    source = scale[:, None] * (pixels + 0.5) - 0.5  # [M, P] heatmap coordinate (no clamp)
    base = ops.floor(source)
    weights = _cubic_weights(source - base)  # [M, P, 4]
    taps = base[..., None] + ops.cast(ops.arange(-1, 3), "float32")  # [M, P, 4]
    taps = ops.cast(ops.clip(taps, 0.0, heatmap_size - 1.0), "int32")
    return pixels, taps, weights


def decode_heatmaps(logits, rois, radius=16):
    """Keypoints [..., K, 3] (x, y, score) in image pixels from logits [..., S, S, K].

    rois: [..., 4] (x1, y1, x2, y2) image pixels, one per heatmap. The score is the
    bicubically resized logit at the chosen pixel (torchvision's keypoint score).
    radius: roi pixels searched on each side of the argmax cell's centre.
    """
    logits = ops.cast(ops.convert_to_tensor(logits), "float32")
    rois = ops.cast(ops.convert_to_tensor(rois), "float32")
    lead = ops.shape(logits)[:-3]
    size, num_keypoints = ops.shape(logits)[-2], ops.shape(logits)[-1]
    maps = ops.reshape(logits, (-1, size, size, num_keypoints))  # [R, S, S, K]
    boxes = ops.reshape(rois, (-1, 4))  # [R, 4]
    num_rois = ops.shape(maps)[0]
    maps = ops.reshape(ops.transpose(maps, (0, 3, 1, 2)), (-1, size, size))  # [M, S, S], M = R*K

    width = ops.maximum(boxes[:, 2] - boxes[:, 0], 1.0)  # [R]
    height = ops.maximum(boxes[:, 3] - boxes[:, 1], 1.0)
    width_px, height_px = ops.ceil(width), ops.ceil(height)  # [R] resized map size

    def per_joint(v):  # [R] -> [M]
        return ops.reshape(ops.repeat(v[:, None], num_keypoints, axis=1), (-1,))

    flat_best = ops.cast(ops.argmax(ops.reshape(maps, (-1, size * size)), axis=-1), "int32")  # [M]
    cell_y = ops.cast(flat_best // size, "float32")
    cell_x = ops.cast(flat_best % size, "float32")
    fsize = float(size) if isinstance(size, int) else ops.cast(size, "float32")
    px_y, taps_y, w_y = _candidate_pixels(cell_y, per_joint(height_px), fsize, radius)  # [M, P]
    px_x, taps_x, w_x = _candidate_pixels(cell_x, per_joint(width_px), fsize, radius)
    num_px = 2 * radius + 1

    # Plain row gathers (take_along_axis would build full index grids): map m's row r is
    # row m * S + r of the [M * S, S] table.
    num_maps = ops.shape(maps)[0]
    first_row = (ops.arange(num_maps, dtype="int32") * size)[:, None]  # [M, 1]
    # Interpolate along y: the 4 tap rows of every candidate row, weighted. [M, P, S]
    rows = ops.take(ops.reshape(maps, (-1, size)),
                    first_row + ops.reshape(taps_y, (-1, num_px * 4)), axis=0)  # [M, P*4, S]
    rows = ops.sum(ops.reshape(rows, (-1, num_px, 4, size)) * w_y[..., None], axis=2)
    # Then along x, on the transposed rows: [M, S(x), P(y)] -> the candidate columns.
    columns = ops.reshape(ops.transpose(rows, (0, 2, 1)), (-1, num_px))  # [M*S, P(y)]
    cols = ops.take(columns, first_row + ops.reshape(taps_x, (-1, num_px * 4)),
                    axis=0)  # [M, P(x)*4, P(y)]
    values = ops.sum(ops.reshape(cols, (-1, num_px, 4, num_px)) * w_x[..., None], axis=2)
    values = ops.transpose(values, (0, 2, 1))  # [M, P(y), P(x)]

    values = ops.reshape(values, (-1, num_px * num_px))  # [M, P*P]
    best = ops.cast(ops.argmax(values, axis=-1), "int32")  # [M]
    score = ops.take_along_axis(values, best[:, None], axis=1)[:, 0]  # [M]
    pick_y = ops.take_along_axis(px_y, (best // num_px)[:, None], axis=1)[:, 0]  # [M]
    pick_x = ops.take_along_axis(px_x, (best % num_px)[:, None], axis=1)[:, 0]
    x = per_joint(boxes[:, 0]) + (pick_x + 0.5) * per_joint(width / width_px)
    y = per_joint(boxes[:, 1]) + (pick_y + 0.5) * per_joint(height / height_px)
    out = ops.reshape(ops.stack([x, y, score], axis=-1), (num_rois, num_keypoints, 3))
    return ops.reshape(out, tuple(lead) + (num_keypoints, 3))  # [..., K, 3]
