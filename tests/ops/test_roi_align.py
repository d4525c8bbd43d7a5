"""roi_align against a numpy transcription of torchvision's CPU ROIAlign (roi_align_kernel.cpp,
tests/ops/roi_align_reference.py), and its written-out gradient against autodiff's."""
import keras
import numpy as np
import pytest

from mrcnn_kp.ops import roi_align
from roi_align_reference import EDGE_BOXES, random_boxes, reference_roi_align


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio,output_size", [(2, (7, 7)), (1, (3, 5)), (3, (4, 2))])
def test_roi_align_matches_torchvision_definition(compiled, aligned, sampling_ratio,
                                                  output_size):
    rng = np.random.default_rng(sampling_ratio)
    features = rng.normal(size=(2, 24, 32, 3)).astype(np.float32)  # image 48 x 64, scale 0.5
    boxes = np.concatenate([random_boxes(rng, 9, 64), EDGE_BOXES])
    box_indices = rng.integers(0, 2, len(boxes)).astype(np.int32)
    fn = compiled(roi_align.roi_align, output_size=output_size, spatial_scale=0.5,
                  sampling_ratio=sampling_ratio, aligned=aligned)
    got = to_numpy(fn(features, boxes, box_indices))
    want = reference_roi_align(features, boxes, box_indices, output_size, 0.5, sampling_ratio,
                               aligned)
    assert got.shape == (len(boxes),) + output_size + (3,)
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert np.all(got[9 + 5] == 0.0)  # a box more than one pixel outside reads nothing


def test_roi_align_hand_computed_ramp(compiled):
    ys, xs = np.mgrid[0:6, 0:8].astype(np.float32)
    features = (xs + 10 * ys)[None, :, :, None]  # f(x, y) = x + 10 y, bilinear is exact
    box = np.array([[1, 1, 3, 3]], np.float32)
    legacy, shifted = (to_numpy(compiled(roi_align.roi_align, output_size=2, spatial_scale=1.0,
                                         aligned=aligned)(features, box, np.zeros(1, np.int32)))
                       for aligned in (False, True))
    np.testing.assert_allclose(legacy[0, ..., 0], [[16.5, 17.5], [26.5, 27.5]], atol=1e-5)
    np.testing.assert_allclose(shifted[0, ..., 0], [[11.0, 12.0], [21.0, 22.0]], atol=1e-5)


def test_roi_align_empty_and_bad_sampling_ratio(compiled):
    features = np.zeros((1, 8, 8, 4), np.float32)
    fn = compiled(roi_align.roi_align, output_size=7, spatial_scale=1.0)
    out = fn(features, np.zeros((0, 4), np.float32), np.zeros((0,), np.int32))
    assert to_numpy(out).shape == (0, 7, 7, 4)
    with pytest.raises(ValueError, match="sampling_ratio must be a positive integer"):
        roi_align.roi_align(features, np.zeros((1, 4)), [0], 7, 1.0, sampling_ratio=0)


def gradients(fn, *arrays):
    """d fn / d each array (fn returns a scalar), on the running backend (graph / jit)."""
    if keras.backend.backend() == "jax":
        import jax

        return [np.asarray(g) for g in
                jax.jit(jax.grad(fn, argnums=tuple(range(len(arrays)))))(*arrays)]
    import tensorflow as tf

    @tf.function
    def run(*tensors):
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value = fn(*tensors)
        return tape.gradient(value, tensors)

    return [g.numpy() for g in run(*[tf.constant(a) for a in arrays])]


def autodiff_roi_align(features, boxes, box_indices, output_size, spatial_scale,
                       sampling_ratio):
    """roi_align with autodiff's gradient: the same corner taps and samples
    (roi_align.corner_taps, _gather_samples) without the written-out backward."""
    _, height, width, channels = features.shape
    grid = roi_align.sample_grid(boxes, spatial_scale, output_size, sampling_ratio, True)
    ones = keras.ops.ones_like(boxes[:, 0])
    taps = roi_align.corner_taps(
        box_indices * (height * width), ones * height, ones * width, grid,
        (output_size[0] * sampling_ratio, output_size[1] * sampling_ratio))
    samples = roi_align._gather_samples(keras.ops.reshape(features, (-1, channels)), taps)
    return roi_align._average_bins(samples, output_size, sampling_ratio)


@pytest.mark.parametrize("sampling_ratio,chunk", [(1, 64), (2, 64), (3, 64), (2, 4), (3, 7)])
def test_written_out_gradient_equals_autodiff(sampling_ratio, chunk, monkeypatch):
    """The feature-map gradient of roi_align (written out: scatter-adds, chunk ROIs at a time,
    no IndexedSlices) is autodiff's of the same samples, boxes at the borders and outside
    included, for a random cotangent; with 16 boxes, chunks of 4 divide them and chunks of 7
    leave a padded remainder."""
    monkeypatch.setattr(roi_align, "GRADIENT_ROI_CHUNK", chunk)
    rng = np.random.default_rng(12)
    features = rng.normal(size=(2, 24, 32, 3)).astype(np.float32)
    boxes = np.concatenate([random_boxes(rng, 9, 64), EDGE_BOXES]).astype(np.float32)
    box_indices = (np.arange(len(boxes)) % 2).astype(np.int32)
    cotangent = rng.normal(size=(len(boxes), 5, 4, 3)).astype(np.float32)

    def loss(pool):
        return lambda f: keras.ops.sum(pool(f, boxes, box_indices, (5, 4), 0.5,
                                            sampling_ratio) * cotangent)

    (written,) = gradients(loss(roi_align.roi_align), features)
    (autodiff,) = gradients(loss(autodiff_roi_align), features)
    assert np.abs(autodiff).max() > 0.1
    np.testing.assert_allclose(written, autodiff, atol=1e-5)
