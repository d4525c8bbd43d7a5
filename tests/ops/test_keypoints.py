"""keypoints: target encoding and heatmap decoding against numpy references written from
torchvision's keypoints_to_heatmap / heatmaps_to_keypoints (roi_heads.py)."""
import math

import keras
import numpy as np

from mrcnn_kp.ops import keypoints

S = 56


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


# ------------------------------------------------------------------ references
def reference_encode(kps, rois, size=S):
    """keypoints_to_heatmap, one joint at a time (float32 maths like torchvision)."""
    n, k = kps.shape[:2]
    target, valid = np.zeros((n, k), np.int64), np.zeros((n, k), bool)
    for i in range(n):
        x1, y1, x2, y2 = rois[i]
        for j in range(k):
            x, y, v = kps[i, j]
            if x2 - x1 <= 0 or y2 - y1 <= 0:
                continue
            cx = math.floor(np.float32(x - x1) * np.float32(size / np.float32(x2 - x1)))
            cy = math.floor(np.float32(y - y1) * np.float32(size / np.float32(y2 - y1)))
            cx = size - 1 if x == x2 else cx
            cy = size - 1 if y == y2 else cy
            if v > 0 and 0 <= cx < size and 0 <= cy < size:
                target[i, j], valid[i, j] = cy * size + cx, True
    return target, valid


def cubic_weight(d, a=-0.75):
    """Keys' cubic convolution kernel at distance d (PyTorch's a = -0.75)."""
    d = np.abs(d)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def bicubic_matrix(in_size, out_size):
    """[out, in] matrix of PyTorch's bicubic resize (align_corners=False, clamped taps)."""
    m = np.zeros((out_size, in_size), np.float64)
    src = in_size / out_size * (np.arange(out_size) + 0.5) - 0.5  # [out]
    base = np.floor(src)
    for tap in range(-1, 3):
        column = np.clip(base + tap, 0, in_size - 1).astype(int)
        np.add.at(m, (np.arange(out_size), column), cubic_weight(src - base - tap))
    return m


def reference_decode(maps, rois):
    """heatmaps_to_keypoints: maps [N, S, S, K] -> [N, K, 3] (x, y, resized logit)."""
    n, _, _, k = maps.shape
    out = np.zeros((n, k, 3))
    for i in range(n):
        x1, y1, x2, y2 = rois[i].astype(np.float32)
        w, h = max(float(x2 - x1), 1.0), max(float(y2 - y1), 1.0)  # float32 sides, as torch's
        wc, hc = int(math.ceil(w)), int(math.ceil(h))
        ry, rx = bicubic_matrix(maps.shape[1], hc), bicubic_matrix(maps.shape[2], wc)
        for j in range(k):
            resized = ry @ maps[i, :, :, j] @ rx.T  # [hc, wc]
            yi, xi = np.unravel_index(np.argmax(resized), resized.shape)
            out[i, j] = (x1 + (xi + 0.5) * w / wc, y1 + (yi + 0.5) * h / hc, resized[yi, xi])
    return out


def random_rois(rng, n, lo=8.0, hi=400.0):
    xy = rng.uniform(0, 300, (n, 2))
    wh = rng.uniform(lo, hi, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


# ------------------------------------------------------------------ encoding
def test_encode_random_matches_reference_on_both_paths(compiled):
    encode = compiled(keypoints.encode_keypoints, graph=True)
    rng = np.random.default_rng(0)
    rois = random_rois(rng, 12)
    kps = np.concatenate([
        rng.uniform(rois[:, None, :2] - 20, rois[:, None, 2:] + 20, (12, 17, 2)),
        rng.integers(0, 3, (12, 17, 1)),
    ], axis=-1).astype(np.float32)
    want_t, want_v = reference_encode(kps, rois)
    assert 20 < want_v.sum() < 12 * 17  # the sample mixes valid and invalid joints
    target, valid = encode(kps, rois)
    assert keras.backend.standardize_dtype(target.dtype) == "int32"
    np.testing.assert_array_equal(to_numpy(valid), want_v)
    np.testing.assert_array_equal(to_numpy(target), want_t)
    np_t, np_v = keypoints.encode_keypoints_numpy(kps, rois)
    np.testing.assert_array_equal(np_t, want_t)
    np.testing.assert_array_equal(np_v, want_v)


def test_encode_joints_on_roi_borders_and_outside(compiled):
    decode, encode = compiled(keypoints.decode_heatmaps), compiled(keypoints.encode_keypoints)
    rois = np.array([[10, 20, 66, 76], [0, 0, 112, 56]], np.float32)
    kps = np.array([
        [[10, 20, 2], [37.9, 48.5, 2], [66, 76, 2], [65.99, 20, 1], [40, 40, 0], [70, 30, 2]],
        [[0, 0, 2], [112, 56, 2], [56, 28, 2], [111.9, 55.9, 2], [-1, 10, 2], [50, 56.01, 2]],
    ], np.float32)
    target, valid = encode(kps, rois)
    # top-left corner -> cell 0; right/bottom edge -> last cell; v = 0 and outside -> invalid
    assert to_numpy(target).tolist() == [[0, 28 * 56 + 27, 3135, 55, 0, 0],
                                         [0, 3135, 28 * 56 + 28, 3135, 0, 0]]
    assert to_numpy(valid).tolist() == [[True] * 4 + [False] * 2] * 2


def test_encode_invisible_degenerate_rois_and_empty(compiled):
    decode, encode = compiled(keypoints.decode_heatmaps), compiled(keypoints.encode_keypoints)
    rois = np.array([[0, 0, 50, 50], [5, 5, 5, 30], [5, 5, 30, 5]], np.float32)
    kps = np.full((3, 17, 3), 5.0, np.float32)
    kps[0, :, 2] = 0  # every joint of roi 0 unlabeled
    target, valid = encode(kps, rois)
    assert not to_numpy(valid).any() and not to_numpy(target).any()
    target, valid = encode(np.zeros((0, 17, 3)), np.zeros((0, 4)))
    assert to_numpy(target).shape == (0, 17) and to_numpy(valid).shape == (0, 17)


def test_encode_batched_leading_dims(compiled):
    decode, encode = compiled(keypoints.decode_heatmaps), compiled(keypoints.encode_keypoints)
    rng = np.random.default_rng(1)
    rois = random_rois(rng, 6)
    kps = np.concatenate([rng.uniform(0, 500, (6, 17, 2)), np.full((6, 17, 1), 2.0)], -1)
    target, _ = encode(kps.reshape(2, 3, 17, 3), rois.reshape(2, 3, 4))
    np.testing.assert_array_equal(to_numpy(target).reshape(6, 17),
                                  reference_encode(kps.astype(np.float32), rois)[0])


# ------------------------------------------------------------------ decoding
def test_decode_one_hot_peaks_equals_reference(compiled):
    decode, encode = compiled(keypoints.decode_heatmaps), compiled(keypoints.encode_keypoints)
    rng = np.random.default_rng(2)
    n, k = 10, 3
    rois = random_rois(rng, n, lo=1.0, hi=500.0)
    rois[0] = [10, 20, 66, 76]  # a 56 px roi: resize is the identity
    rois[1] = [3.5, 4.25, 4.0, 4.5]  # smaller than one pixel
    maps = np.full((n, S, S, k), -5.0, np.float32)
    cells = rng.integers(0, S, (n, k, 2))
    cells[0, 0] = (0, 0)
    cells[0, 1] = (55, 55)
    for i in range(n):
        for j in range(k):
            maps[i, cells[i, j, 1], cells[i, j, 0], j] = 10.0
    got = to_numpy(decode(maps, rois))
    want = reference_decode(maps, rois)
    assert got.shape == (n, k, 3)
    np.testing.assert_allclose(got[0, :2, :2], [[10.5, 20.5], [65.5, 75.5]], atol=1e-4)
    # Same score everywhere; positions agree up to exact ties between two neighbouring pixels
    # (a one-hot peak halfway between two roi pixels), which may go either way in float32.
    np.testing.assert_allclose(got[..., 2], want[..., 2], atol=1e-3)
    pixel = np.stack([np.maximum(rois[:, 2] - rois[:, 0], 1) / np.ceil(np.maximum(
        rois[:, 2] - rois[:, 0], 1)), np.maximum(rois[:, 3] - rois[:, 1], 1) / np.ceil(
        np.maximum(rois[:, 3] - rois[:, 1], 1))], axis=-1)[:, None, :]  # [n, 1, 2] px per cell
    off = np.abs(got[..., :2] - want[..., :2])
    assert np.all((off < 1e-3) | (np.abs(off - pixel) < 1e-3)), off
    assert (off < 1e-3).mean() > 0.9


def test_decode_smooth_peaks_within_one_pixel_of_reference(compiled):
    decode = compiled(keypoints.decode_heatmaps, graph=True)
    rng = np.random.default_rng(3)
    n, k = 12, 4
    rois = random_rois(rng, n, lo=10.0, hi=800.0)
    centres = rng.uniform(2, 53, (n, k, 2))
    sigma = rng.uniform(1.0, 3.0, (n, k, 1, 1))
    yy, xx = np.mgrid[0:S, 0:S]
    d2 = ((xx - centres[..., 0, None, None]) ** 2 + (yy - centres[..., 1, None, None]) ** 2)
    maps = (8.0 * np.exp(-d2 / (2 * sigma ** 2))).transpose(0, 2, 3, 1).astype(np.float32)
    got = to_numpy(decode(maps, rois))
    want = reference_decode(maps, rois)
    assert np.abs(got[..., :2] - want[..., :2]).max() <= 1.0
    np.testing.assert_allclose(got[..., 2], want[..., 2], atol=1e-3)


def test_decode_batched_shape_and_empty(compiled):
    decode, encode = compiled(keypoints.decode_heatmaps), compiled(keypoints.encode_keypoints)
    rng = np.random.default_rng(4)
    maps = rng.normal(size=(2, 3, S, S, 17)).astype(np.float32)
    rois = random_rois(rng, 6).reshape(2, 3, 4)
    got = to_numpy(decode(maps, rois))
    assert got.shape == (2, 3, 17, 3)
    flat = to_numpy(decode(maps.reshape(6, S, S, 17), rois.reshape(6, 4)))
    np.testing.assert_allclose(got.reshape(6, 17, 3), flat, atol=1e-5)
    empty = to_numpy(decode(np.zeros((0, S, S, 17)), np.zeros((0, 4))))
    assert empty.shape == (0, 17, 3)


def test_decode_zero_size_roi_is_finite_and_at_its_corner(compiled):
    decode, encode = compiled(keypoints.decode_heatmaps), compiled(keypoints.encode_keypoints)
    maps = np.zeros((1, S, S, 17), np.float32)
    maps[0, 30, 30, :] = 1.0
    got = to_numpy(decode(maps, np.array([[7, 9, 7, 9]], np.float32)))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got[0, :, :2], np.tile([[7.5, 9.5]], (17, 1)), atol=1e-5)


def test_decode_inside_a_keras_model_with_symbolic_batch(compiled, in_keras_model):
    rng = np.random.default_rng(5)
    maps = rng.normal(size=(2, 3, S, S, 17)).astype(np.float32)
    rois = random_rois(rng, 6).reshape(2, 3, 4)
    shapes, got = in_keras_model(keypoints.decode_heatmaps, maps, rois)
    assert shapes == [(None, 3, 17, 3)]
    want = to_numpy(compiled(keypoints.decode_heatmaps)(maps, rois))  # noisy maps: direct call
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)


# ------------------------------------------------------------------ exact decoding
ROI_SIDES = np.array([1.0, 1.3, 2.5, 7.0, 55.2, 56.0, 57.9, 113.0, 250.4, 512.0, 799.6])


def side_rois(rng, sides):
    """Rois whose widths and heights run through `sides` (shuffled against each other)."""
    xy = rng.uniform(0, 50, (len(sides), 2))
    wh = np.stack([sides, rng.permutation(sides)], axis=-1)
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def test_reference_bicubic_is_torchs_interpolate():
    """bicubic_matrix (the references' resize) against torch.nn.functional.interpolate."""
    torch = __import__("pytest").importorskip("torch")
    rng = np.random.default_rng(10)
    heatmap = rng.normal(size=(S, S))
    for out_h, out_w in [(1, 1), (2, 3), (55, 57), (56, 56), (113, 800), (800, 251)]:
        want = torch.nn.functional.interpolate(
            torch.from_numpy(heatmap)[None, None], size=(out_h, out_w), mode="bicubic",
            align_corners=False)[0, 0].numpy()
        got = bicubic_matrix(S, out_h) @ heatmap @ bicubic_matrix(S, out_w).T
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_interpolation_matrix_equals_reference_and_masks_padding(compiled):
    sides = np.array([1.0, 3.0, 56.0, 70.0], np.float32)
    matrix, valid = compiled(keypoints.interpolation_matrix, heatmap_size=S, max_pixels=80)(
        sides)
    matrix, valid = to_numpy(matrix), to_numpy(valid)
    assert matrix.shape == (4, 80, S) and valid.shape == (4, 80)
    for i, side in enumerate(sides.astype(int)):
        # float32 weights (torch's scale in / out is float32 too)
        np.testing.assert_allclose(matrix[i, :side], bicubic_matrix(S, side), atol=1e-5)
        assert (matrix[i, side:] == 0).all() and valid[i].sum() == side


def test_decode_exact_matches_reference_on_flat_random_maps(compiled):
    """Untrained heads' maps: flat noise whose maximum may lie anywhere in the resized map
    (the window decoder misses ~20 % of these); the exact decoder finds it every time."""
    decode = compiled(keypoints.decode_heatmaps_exact, graph=True, max_pixels=800)
    rng = np.random.default_rng(11)
    rois = side_rois(rng, ROI_SIDES)
    maps = (0.01 * rng.normal(size=(len(rois), S, S, 5))).astype(np.float32)
    got = to_numpy(decode(maps, rois))
    want = reference_decode(maps, rois)
    assert got.shape == (len(rois), 5, 3)
    assert np.abs(got[..., :2] - want[..., :2]).max() <= 1e-3  # the same pixel, every joint
    np.testing.assert_allclose(got[..., 2], want[..., 2], atol=1e-7)


def test_decode_exact_matches_reference_on_peaked_maps(compiled):
    decode = compiled(keypoints.decode_heatmaps_exact, max_pixels=800)
    rng = np.random.default_rng(12)
    rois = side_rois(rng, ROI_SIDES)
    n, k = len(rois), 4
    centres = rng.uniform(2, 53, (n, k, 2))
    sigma = rng.uniform(0.3, 3.0, (n, k, 1, 1))
    yy, xx = np.mgrid[0:S, 0:S]
    d2 = ((xx - centres[..., 0, None, None]) ** 2 + (yy - centres[..., 1, None, None]) ** 2)
    maps = (8.0 * np.exp(-d2 / (2 * sigma ** 2))).transpose(0, 2, 3, 1)
    maps = (maps + 0.01 * rng.normal(size=maps.shape)).astype(np.float32)
    got = to_numpy(decode(maps, rois))
    want = reference_decode(maps, rois)
    assert np.abs(got[..., :2] - want[..., :2]).max() <= 1e-3
    np.testing.assert_allclose(got[..., 2], want[..., 2], rtol=1e-5)


def test_decode_exact_batched_symbolic_and_clamped(compiled, in_keras_model):
    """[B, D, S, S, K] in a model with an unknown batch; rois wider than max_pixels are
    resized to max_pixels (x = x1 + (j + 0.5) * width / max_pixels)."""
    rng = np.random.default_rng(13)
    maps = rng.normal(size=(2, 3, S, S, 17)).astype(np.float32)
    rois = random_rois(rng, 6, hi=60.0).reshape(2, 3, 4)
    shapes, got = in_keras_model(
        lambda m, r: keypoints.decode_heatmaps_exact(m, r, max_pixels=64), maps, rois)
    assert shapes == [(None, 3, 17, 3)]
    want = reference_decode(maps.reshape(6, S, S, 17), rois.reshape(6, 4)).reshape(2, 3, 17, 3)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-3)
    wide = np.zeros((1, S, S, 1), np.float32)
    wide[0, 20, S - 1, 0] = 1.0  # the right-most column: the resized map's last pixel
    out = to_numpy(compiled(keypoints.decode_heatmaps_exact, max_pixels=64)(
        wide, np.array([[0, 0, 640, 64]], np.float32)))
    np.testing.assert_allclose(out[0, 0, 0], 63.5 * 10.0, atol=1e-3)


def test_decode_exact_no_rois(compiled):
    decode = compiled(keypoints.decode_heatmaps_exact, max_pixels=64)
    empty = to_numpy(decode(np.zeros((0, S, S, 17), np.float32), np.zeros((0, 4), np.float32)))
    assert empty.shape == (0, 17, 3)
