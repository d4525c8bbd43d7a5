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

decode_heatmaps_exact is torchvision's decoding without the window: every roi's map is resized
in full, as W_y [P, S] @ logits @ W_x^T [S, P] (the bicubic weights of each roi pixel as
interpolation matrices: PyTorch's source coordinate (i + 0.5) * S / ceil(side) - 0.5, a = -0.75,
taps clamped to the map), padded to a static P >= every roi side (the canvas side), the rows
and columns beyond the roi's masked out, and the global argmax taken (first of equal maxima, as
torch). One roi at a time (ops.map); on TensorFlow each roi's matrices are cut to its own
ceil(h) x ceil(w) (K h w values, torchvision's cost), on JAX (static shapes) K x P x P.
"""
import keras
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


def interpolation_matrix(sides, heatmap_size, max_pixels):
    """PyTorch's bicubic resize (align_corners=False) of heatmap_size cells to `sides` pixels
    as matrices: sides [R] (integer-valued floats in [1, max_pixels]) -> weights
    [R, max_pixels, heatmap_size] (rows >= side are zero) and valid [R, max_pixels] bool."""
    pixels = ops.cast(ops.arange(max_pixels), "float32")[None, :]  # [1, P]
    scale = float(heatmap_size) / sides[:, None]  # [R, 1] float32, as torch's in / out
    source = scale * (pixels + 0.5) - 0.5  # [R, P], not clamped (torch's cubic rule)
    base = ops.floor(source)
    weights = _cubic_weights(source - base)  # [R, P, 4]
    taps = base[..., None] + ops.cast(ops.arange(-1, 3), "float32")  # [R, P, 4]
    taps = ops.cast(ops.clip(taps, 0.0, heatmap_size - 1.0), "int32")
    matrix = ops.sum(ops.one_hot(taps, heatmap_size) * weights[..., None], axis=2)  # [R, P, S]
    valid = pixels < sides[:, None]  # [R, P]
    return ops.where(valid[..., None], matrix, 0.0), valid


def decode_heatmaps_exact(logits, rois, max_pixels):
    """decode_heatmaps with the argmax over each roi's whole resized map (torchvision's
    heatmaps_to_keypoints exactly). max_pixels: a static bound on ceil(roi side); larger
    sides are clamped to it (rois clipped to a canvas never exceed its side)."""
    logits = ops.cast(ops.convert_to_tensor(logits), "float32")
    rois = ops.cast(ops.convert_to_tensor(rois), "float32")
    max_pixels = int(max_pixels)
    lead = ops.shape(logits)[:-3]
    size, num_keypoints = ops.shape(logits)[-2], ops.shape(logits)[-1]
    maps = ops.reshape(logits, (-1, size, size, num_keypoints))  # [R, S, S, K]
    maps = ops.transpose(maps, (0, 3, 1, 2))  # [R, K, S, S]
    boxes = ops.reshape(rois, (-1, 4))  # [R, 4]

    width = ops.maximum(boxes[:, 2] - boxes[:, 0], 1.0)  # [R]
    height = ops.maximum(boxes[:, 3] - boxes[:, 1], 1.0)
    width_px = ops.minimum(ops.ceil(width), float(max_pixels))  # [R] resized map size
    height_px = ops.minimum(ops.ceil(height), float(max_pixels))
    matrix_y, valid_y = interpolation_matrix(height_px, size, max_pixels)  # [R, P, S], [R, P]
    matrix_x, valid_x = interpolation_matrix(width_px, size, max_pixels)

    dynamic = keras.backend.backend() == "tensorflow"
    sizes = ops.cast(ops.stack([height_px, width_px], axis=-1), "int32")  # [R, 2]

    def one_roi(args):
        heatmaps, rows, columns, inside_y, inside_x, hw = args  # [K,S,S], [P,S] x2, [P] x2, [2]
        if dynamic:  # TensorFlow: the roi's own ceil(h) x ceil(w) map, as torchvision's
            rows = ops.slice(rows, (0, 0), (hw[0], size))
            columns = ops.slice(columns, (0, 0), (hw[1], size))
            stride = hw[1]
        else:  # static shapes (JAX): the padded map, rows and columns beyond the roi masked
            stride = max_pixels
        resized = ops.matmul(rows, ops.matmul(heatmaps, ops.transpose(columns)))  # [K, h, w]
        resized = ops.reshape(resized, (num_keypoints, -1))
        if not dynamic:
            inside = ops.reshape(inside_y[:, None] & inside_x[None, :], (1, -1))  # [1, P * P]
            resized = ops.where(inside, resized, float("-inf"))
        best = ops.cast(ops.argmax(resized, axis=-1), "int32")  # [K]
        score = ops.take_along_axis(resized, best[:, None], axis=1)[:, 0]
        return ops.stack([ops.cast(best % stride, "float32"),
                          ops.cast(best // stride, "float32"), score], axis=-1)  # [K, 3]

    per_roi = (maps, matrix_y, matrix_x, valid_y, valid_x, sizes)
    if dynamic:  # tf.map_fn with the output spec given (ops.map runs roi 0 first to find it)
        import tensorflow as tf

        picked = tf.map_fn(one_roi, per_roi,
                           fn_output_signature=tf.TensorSpec((num_keypoints, 3), "float32"))
    else:
        picked = ops.map(one_roi, per_roi)  # [R, K, 3]
    x = boxes[:, 0:1] + (picked[..., 0] + 0.5) * (width / width_px)[:, None]  # [R, K]
    y = boxes[:, 1:2] + (picked[..., 1] + 0.5) * (height / height_px)[:, None]
    out = ops.stack([x, y, picked[..., 2]], axis=-1)  # [R, K, 3]
    return ops.reshape(out, tuple(lead) + (num_keypoints, 3))  # [..., K, 3]
