"""pyramid_roi_align: the FPN level rule, each box pooled from its level as torchvision's
ROIAlign pools it (tests/ops/roi_align_reference.py), per-image extents, gradients to every
level, and matterport's crop_and_resize mode against its definition and tf's kernel."""
import math

import keras
import numpy as np
import pytest

from mrcnn_kp.ops.pyramid_roi_align import (fpn_levels, matterport_levels, pyramid_roi_align,
                                            pyramid_roi_align_batched)
from ops_test_helpers import fast_path_params
from roi_align_reference import random_boxes, reference_roi_align


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def test_fpn_levels_follow_the_published_formula(compiled):
    sides = np.array([0, 1, 32, 111.9, 112, 223.9, 224, 447.9, 448, 1000, 5000], np.float32)
    boxes = np.stack([np.zeros_like(sides), np.zeros_like(sides), sides, sides], axis=1)
    want = [min(5, max(2, math.floor(4 + math.log2(s / 224) + 1e-6))) if s > 0 else 2
            for s in sides.astype(np.float64)]
    assert to_numpy(compiled(fpn_levels)(boxes)).tolist() == want
    assert want[4] == 3 and want[6] == 4 and want[8] == 5  # exact powers of two, no rounding
    wide = np.array([[0, 0, 448, 112]], np.float32)  # sqrt(448 * 112) = 224 -> level 4
    assert to_numpy(compiled(fpn_levels)(wide)).tolist() == [4]


def pyramid(rng, batch=2, image=256, channels=3):
    return [rng.normal(size=(batch, image // s, image // s, channels)).astype(np.float32)
            for s in (4, 8, 16, 32)]


def test_pyramid_roi_align_pools_each_box_from_its_level_in_input_order(compiled):
    rng = np.random.default_rng(7)
    features = pyramid(rng)
    sides = np.array([20, 120, 230, 460, 60, 3, 0, 300], np.float32)  # levels 2,3,4,5,2,2,2,4
    xy = rng.uniform(-10, 150, (len(sides), 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + sides[:, None]], axis=1)
    box_indices = np.array([0, 1, 1, 0, 1, 0, 1, 0], np.int32)
    fn = compiled(pyramid_roi_align, graph=True, output_size=(5, 4),
                  image_size=(256, 256))
    got = to_numpy(fn(features, boxes, box_indices))
    assert got.shape == (8, 5, 4, 3)
    levels = [min(5, max(2, math.floor(4 + math.log2(s / 224) + 1e-6))) if s > 0 else 2
              for s in sides.astype(np.float64)]
    assert levels == [2, 3, 4, 5, 2, 2, 2, 4]
    for n, level in enumerate(levels):
        fmap = features[level - 2]
        want = reference_roi_align(fmap, boxes[n:n + 1], box_indices[n:n + 1], (5, 4),
                                   fmap.shape[1] / 256, 2, True)
        np.testing.assert_allclose(got[n], want[0], atol=2e-5, err_msg=f"box {n}")


@pytest.mark.parametrize("aligned", [False, True])
def test_pyramid_roi_align_extents_end_each_image_where_its_own_maps_end(compiled, aligned):
    """Two images on one 256 canvas, at its top-left, with extents 160 x 224 and 96 x 128 (their
    sizes padded to 32): every box pools what torchvision's ROIAlign pools from that image's
    maps alone (each level cropped to extent / stride). Boxes hug the bottom and right edges,
    thin ones included: aligned=False widens them to one feature pixel, past the image's edge,
    where torchvision reads 0 but the canvas holds values."""
    rng = np.random.default_rng(11)
    features = pyramid(rng, batch=2, image=256)
    extents = np.array([[160, 224], [96, 128]], np.float32)  # (height, width) pixels
    boxes, box_indices = [], []
    for b, (h, w) in enumerate(extents):
        boxes += [[w - 60, h - 3, w - 0.2, h], [w - 2.5, 10, w, 70], [w - 40, h - 40, w, h],
                  [w - 150, h - 90, w - 1, h - 1], [w - 1, h - 1, w, h], [5, 5, 25, 30]]
        box_indices += [b] * 6
    boxes = np.array(boxes, np.float32)
    box_indices = np.array(box_indices, np.int32)
    fn = compiled(pyramid_roi_align, graph=True, output_size=(7, 7),
                  image_size=(256, 256), aligned=aligned)
    got = to_numpy(fn(features, boxes, box_indices, extents=extents))
    whole = to_numpy(fn(features, boxes, box_indices))  # the canvas' maps, no extents
    sides = np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1))
    levels = [min(5, max(2, math.floor(4 + math.log2(max(s, 1e-6) / 224) + 1e-6)))
              for s in sides.astype(np.float64)]
    for n, (level, b) in enumerate(zip(levels, box_indices)):
        stride = 2 ** level
        h, w = (int(v) // stride for v in extents[b])
        own = features[level - 2][b:b + 1, :h, :w]  # torchvision's map of this image alone
        want = reference_roi_align(own, boxes[n:n + 1], [0], (7, 7), 1.0 / stride, 2, aligned)
        np.testing.assert_allclose(got[n], want[0], atol=2e-5, err_msg=f"box {n}")
    if not aligned:  # the widened thin boxes would read the canvas beyond each image
        assert np.abs(whole - got).max() > 0.1
    with pytest.raises(ValueError, match="extents needs mode 'roi_align'"):
        pyramid_roi_align(features, boxes, box_indices, 7, 256, extents=extents,
                          mode="crop_and_resize")


def test_pyramid_roi_align_batched_and_errors(compiled):
    rng = np.random.default_rng(8)
    features = pyramid(rng, batch=2, image=128)
    boxes = random_boxes(rng, 6, 128).reshape(2, 3, 4)
    fn = compiled(pyramid_roi_align_batched, output_size=3, image_size=128)
    got = to_numpy(fn(features, boxes))
    assert got.shape == (2, 3, 3, 3, 3)
    flat_fn = compiled(pyramid_roi_align, output_size=3, image_size=128)
    flat = to_numpy(flat_fn(features, boxes.reshape(6, 4), np.repeat(np.arange(2), 3)))
    np.testing.assert_allclose(got.reshape(flat.shape), flat, atol=1e-5)
    with pytest.raises(ValueError, match="same stride along y and x"):
        pyramid_roi_align(features, boxes[0], [0, 0, 0], 3, (128, 256))


@pytest.mark.parametrize("use_fast_path", fast_path_params())
def test_pyramid_roi_align_gradient_reaches_every_level(use_fast_path):
    """Each bin is a convex combination of map values, so for boxes well inside the maps the
    gradient of the summed output w.r.t. each level's map sums to (boxes on it) * bins."""
    rng = np.random.default_rng(9)
    features = pyramid(rng, batch=1, image=512, channels=2)
    sides = np.array([30, 40, 120, 230, 450], np.float32)  # levels 2, 2, 3, 4, 5
    boxes = np.stack([np.full(5, 10.0), np.full(5, 20.0), 10 + sides, 20 + sides],
                     axis=1).astype(np.float32)
    box_indices = np.zeros(5, np.int32)

    def total(*maps):
        out = pyramid_roi_align(list(maps), boxes, box_indices, 3, 512,
                                use_fast_path=use_fast_path)
        return keras.ops.sum(out)

    if keras.backend.backend() == "jax":
        import jax

        grads = jax.jit(jax.grad(total, argnums=(0, 1, 2, 3)))(*features)
    else:
        import tensorflow as tf

        maps = [tf.constant(f) for f in features]
        with tf.GradientTape() as tape:
            tape.watch(maps)
            value = total(*maps)
        grads = tape.gradient(value, maps)
    per_level = [to_numpy(g).sum(axis=(0, 1, 2)) for g in grads]  # [C] per level
    np.testing.assert_allclose(per_level, [[18, 18], [9, 9], [9, 9], [9, 9]], atol=1e-3)


def test_pyramid_roi_align_batched_inside_a_keras_model_with_symbolic_batch(in_keras_model):
    rng = np.random.default_rng(10)
    features = pyramid(rng, batch=2, image=128, channels=4)
    boxes = random_boxes(rng, 10, 128).reshape(2, 5, 4)
    shapes, got = in_keras_model(
        lambda b, *maps: pyramid_roi_align_batched(list(maps), b, 7, 128),
        boxes, *features)
    assert shapes == [(None, 5, 7, 7, 4)]
    for b in range(2):
        for n in range(5):
            side = np.sqrt(np.prod(boxes[b, n, 2:] - boxes[b, n, :2]))
            level = min(5, max(2, math.floor(4 + math.log2(side / 224) + 1e-6)))
            fmap = features[level - 2]
            want = reference_roi_align(fmap, boxes[b, n:n + 1], [b], (7, 7),
                                       fmap.shape[1] / 128, 2, True)
            np.testing.assert_allclose(np.asarray(got)[b, n], want[0], atol=2e-5)


# ------------------------------------------------------------------ matterport's crop_and_resize
def reference_matterport_pool(features, boxes, box_indices, size, image):
    """matterport PyramidROIAlign: normalised boxes, round-half-even level rule, then
    tf.image.crop_and_resize (bilinear, extrapolation 0) written per sample."""
    out = np.zeros((len(boxes), size, size, features[0].shape[-1]))
    levels = []
    for n, (x1, y1, x2, y2) in enumerate(boxes.astype(np.float64)):
        ny1, nx1 = y1 / (image - 1), x1 / (image - 1)
        ny2, nx2 = (y2 - 1) / (image - 1), (x2 - 1) / (image - 1)
        area = max((ny2 - ny1) * (nx2 - nx1), 0.0)
        level = 2 if area == 0 else int(min(5, max(2, 4 + np.round(
            math.log2(math.sqrt(area) / (224 / image))))))
        levels.append(level)
        fmap = features[level - 2][box_indices[n]]
        h, w = fmap.shape[:2]
        for i in range(size):
            in_y = ny1 * (h - 1) + i * (ny2 - ny1) * (h - 1) / (size - 1)
            for j in range(size):
                in_x = nx1 * (w - 1) + j * (nx2 - nx1) * (w - 1) / (size - 1)
                if not (0 <= in_y <= h - 1 and 0 <= in_x <= w - 1):
                    continue
                top, left = math.floor(in_y), math.floor(in_x)
                bottom, right = math.ceil(in_y), math.ceil(in_x)
                ly, lx = in_y - top, in_x - left
                upper = fmap[top, left] + (fmap[top, right] - fmap[top, left]) * lx
                lower = fmap[bottom, left] + (fmap[bottom, right] - fmap[bottom, left]) * lx
                out[n, i, j] = upper + (lower - upper) * ly
    return out, levels


def test_crop_and_resize_mode_matches_matterport_definition(compiled):
    rng = np.random.default_rng(11)
    features = pyramid(rng, batch=2, image=256, channels=3)
    sides = np.array([10, 40, 63, 64, 100, 128, 200, 250, 1, 330, 400], np.float32)
    xy = rng.uniform(-20, 200, (len(sides), 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + sides[:, None]], axis=1)
    box_indices = rng.integers(0, 2, len(sides)).astype(np.int32)
    fn = compiled(pyramid_roi_align, output_size=7, image_size=256,
                  mode="crop_and_resize")
    got = to_numpy(fn(features, boxes, box_indices))
    want, levels = reference_matterport_pool(features, boxes, box_indices, 7, 256)
    assert len(set(levels)) == 4  # every level is used
    np.testing.assert_array_equal(
        to_numpy(compiled(matterport_levels, image_size=256)(boxes)), levels)
    np.testing.assert_allclose(got, want, atol=2e-5)
    with pytest.raises(ValueError, match="unknown ROI pooling mode 'nearest'"):
        pyramid_roi_align(features, boxes, box_indices, 7, 256, mode="nearest")


def test_crop_and_resize_on_normalised_boxes_ending_on_the_far_edge_is_tfs_to_the_bit(compiled):
    """matterport's boxes clipped to the image end at exactly 1.0; whether the last sample reads
    the border or 0 then rests on float32 rounding, so the sampling must be the kernel's own
    arithmetic (tf.image.crop_and_resize, via tests/matterport_reference.py), in graph mode."""
    import matterport_reference as ref

    rng = np.random.default_rng(5)
    features = pyramid(rng, batch=1, image=128, channels=3)
    lo = rng.uniform(0, 0.95, (200, 2)).astype(np.float32)
    boxes = np.concatenate([lo, np.ones_like(lo)], axis=1)  # (y1, x1, 1, 1)
    boxes[::3, 2] = rng.uniform(lo[::3, 0], 1.0)  # some end inside along y
    fn = compiled(pyramid_roi_align, graph=True, output_size=7, image_size=128,
                  mode="crop_and_resize", normalized_boxes=True)
    got = to_numpy(fn(features, boxes, np.zeros(len(boxes), np.int32)))
    want = ref.pyramid_roi_align(boxes, [f[0] for f in features], 7, (128, 128))
    edge = np.abs(want[:, :, -1]).max(axis=(1, 2))  # the last column: border, or 0 in TF
    assert (edge == 0).any() and (edge > 0).any()  # both happen
    if keras.backend.backend() == "tensorflow":
        np.testing.assert_array_equal(got, want)
    else:  # XLA may round the grid otherwise: compare the samples inside the boxes
        np.testing.assert_allclose(got[:, :-1, :-1], want[:, :-1, :-1], atol=2e-5)
    with pytest.raises(ValueError, match="normalized_boxes needs mode 'crop_and_resize'"):
        pyramid_roi_align(features, boxes, np.zeros(200, np.int32), 7, 128,
                          normalized_boxes=True)
