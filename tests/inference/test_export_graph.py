"""export_graph: the in-graph molding equals the Predictor's (data.transforms.resize_image,
bit for bit in float64, within rare rounding in float32; square, torchvision and non-square
canvas modes), the un-molding equals predictor.unmold_detections, and plain_argmax gives
keras.ops.argmax's indices."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from export_standin import SIZES, image_of  # noqa: E402
from mrcnn_kp.config import TinyConfig  # noqa: E402
from mrcnn_kp.inference import export_graph  # noqa: E402
from mrcnn_kp.inference.predictor import Predictor, unmold_detections  # noqa: E402

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="exports need the TensorFlow backend")


# ----------------------------------------------------------------------------- molding
@pytest.mark.parametrize("height, width", SIZES)
def test_mold_image_equals_the_predictors_molding(config, model, height, width):
    image = image_of(height, width)
    molded, meta, window, scale = export_graph.mold_image(tf.constant(image), config)
    ref_molded, ref_meta, ref_windows, ref_scales = Predictor(model, config).mold_inputs([image])
    np.testing.assert_array_equal(molded.numpy(), ref_molded[0])
    np.testing.assert_array_equal(meta.numpy(), ref_meta[0])
    assert tuple(window.numpy()) == tuple(ref_windows[0])
    assert scale.numpy() == np.float32(ref_scales[0])


def test_float32_molding_differs_in_few_values_on_coco(coco_mini):
    """TFLite's float32 path vs Pillow on real photos, downscaled to 512 px: exact sums, so
    only float32 weights (one unit of 2**-22 off) move a value across a rounding boundary."""
    from PIL import Image

    from mrcnn_kp.config import Config
    from mrcnn_kp.data import transforms

    _, images = coco_mini
    config = Config(IMAGE_MIN_DIM=512, IMAGE_MAX_DIM=512)
    differing, total = 0, 0
    for path in sorted(images.iterdir())[:2]:
        image = np.asarray(Image.open(path).convert("RGB"))
        reference = transforms.resize_image(image, config)[0].astype(int)
        exact = export_graph.mold_image(tf.constant(image), config, exact=True)[0].numpy()
        fast = export_graph.mold_image(tf.constant(image), config, exact=False)[0].numpy()
        np.testing.assert_array_equal(exact, reference)
        diff = np.abs(fast - reference)
        assert diff.max() <= 2  # each of the two passes can round the other way
        differing += int((diff > 0).sum())
        total += diff.size
    assert differing / total < 2e-4  # measured 0.004 % on 6 photos (float32 sums: 1.2 %)


# ----------------------------------------------------------------------------- un-molding
def test_unmold_outputs_equals_predictor_unmold_detections():
    rng = np.random.default_rng(3)
    d, k = 6, 17
    window, scale, shape = (16, 0, 112, 128), 0.5, (192, 256, 3)  # a 192x256 image at 0.5
    boxes = np.array([[10, 20, 60, 80], [-20, 10, 30, 50], [100, 90, 140, 130],
                      [5, 5, 5, 40], [30, 30, 70, 90], [0, 0, 10, 10]], np.float32)
    outputs = {
        "boxes": boxes,  # row 1 leaves the image on the left, row 2 at the bottom right
        "class_ids": np.array([1, 1, 0, 1, 1, 1], np.int32),  # row 2 empty, row 3 zero width
        "scores": rng.uniform(0.5, 1, d).astype(np.float32),
        "keypoints": rng.uniform(0, 128, (d, k, 3)).astype(np.float32),
        "masks": rng.uniform(0, 1, (d, 28, 28)).astype(np.float32),
        "num_detections": np.int32(5),  # row 5 is past the count
    }
    ref = unmold_detections(outputs, shape, window, scale)
    ours = export_graph.unmold_outputs({n: tf.constant(v) for n, v in outputs.items()},
                                 tf.constant(window), tf.constant(scale, tf.float32),
                                 shape[0], shape[1], paste=True)
    ours = {n: v.numpy() for n, v in ours.items()}
    n = len(ref["class_ids"])
    assert n == 3 and ours["num_detections"] == 3
    np.testing.assert_allclose(ours["boxes"][:n], ref["rois"], atol=1e-4)
    np.testing.assert_array_equal(ours["class_ids"][:n], ref["class_ids"])
    np.testing.assert_allclose(ours["scores"][:n], ref["scores"], atol=1e-7)
    np.testing.assert_allclose(ours["keypoints"][:n], ref["keypoints"], atol=1e-4)
    pasted = ours["masks"][:n].transpose(1, 2, 0).astype(bool)  # [H, W, n]
    assert pasted.shape == ref["masks"].shape
    assert ref["masks"].sum() > 1000
    assert (pasted != ref["masks"]).mean() < 1e-4
    assert not ours["boxes"][n:].any() and not ours["masks"][n:].any()


def test_plain_argmax_gives_the_indices_of_keras_argmax():
    values = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32)
    values[0, 0, :2] = [-0.0, 0.0]  # the case keras' bit trick exists for
    for axis in (None, 0, -1, 1):
        for keepdims in (False, True):
            want = keras.ops.argmax(values, axis=axis, keepdims=keepdims)
            got = export_graph.plain_argmax(values, axis=axis, keepdims=keepdims)
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
            assert np.asarray(got).dtype == np.int32


@pytest.mark.parametrize("height, width", [(480, 640), (400, 1200), (1600, 1000), (64, 48)])
def test_mold_image_follows_the_torchvision_resize_mode(height, width):
    """TorchvisionKeypointConfig: the exported molding equals transforms.resize_image's
    (min(800 / short, 1333 / long), floored sizes, float bilinear, top-left, mean padding)."""
    from mrcnn_kp.config import TorchvisionKeypointConfig
    from mrcnn_kp.data import transforms

    config = TorchvisionKeypointConfig()
    image = image_of(height, width)
    molded, _, window, scale = export_graph.mold_image(tf.constant(image), config)
    want, want_window, want_scale, _ = transforms.resize_image(image, config)
    assert tuple(window.numpy()) == tuple(want_window)
    assert scale.numpy() == np.float32(want_scale)
    # tf's half-pixel bilinear is torch's up to its float32 coordinate arithmetic (1 / 5000)
    np.testing.assert_allclose(molded.numpy(), want, atol=0.02)


@pytest.mark.parametrize("height, width", [(100, 64), (37, 200), (300, 260)])
@pytest.mark.parametrize("mode", ["square", "torchvision"])
def test_mold_image_fits_a_non_square_canvas_like_transforms(height, width, mode):
    """IMAGE_CANVAS_SHAPE (64, 128): the exported molding has the canvas' static shape, the
    same window and scale as transforms.resize_image, and (square mode) the same pixels."""
    from mrcnn_kp.data import transforms

    config = TinyConfig(IMAGES_PER_GPU=1, IMAGE_MIN_DIM=64, IMAGE_CANVAS_SHAPE=(64, 128),
                        IMAGE_RESIZE_MODE=mode)
    image = image_of(height, width)
    molded, meta, window, scale = export_graph.mold_image(tf.constant(image), config)
    want, want_window, want_scale, _ = transforms.resize_image(image, config)
    assert molded.shape == (64, 128, 3) and tuple(meta.numpy()[4:7]) == (64, 128, 3)
    assert tuple(window.numpy()) == tuple(want_window)
    assert scale.numpy() == np.float32(want_scale)
    if mode == "square":
        np.testing.assert_array_equal(molded.numpy(), want)
    else:
        np.testing.assert_allclose(molded.numpy(), want, atol=0.02)
