"""mrcnn_kp.inference.export: the serving function and the SavedModel / TFLite / ONNX files.

The serving function must do what Predictor does (mold with data.transforms, run, unmold with
predictor.unmold_detections), so each test compares against the Predictor on the same image.
A small stand-in inference model with the output contract of docs/DESIGN.md keeps the
format tests fast; tests/inference/test_exported.py compares every format on the real
TinyConfig model.

Tolerances: SavedModel runs the same TF kernels as Keras: boxes and keypoints within 1e-3 px,
scores within 1e-5. TFLite (XNNPACK) and ONNX Runtime use other float32 kernels: boxes and
keypoints within 0.05 px, scores and mask probabilities within 1e-4.
"""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402
from keras import layers as KL  # noqa: E402
from keras import ops  # noqa: E402

from mrcnn_kp.config import TinyConfig  # noqa: E402
from mrcnn_kp.inference import export  # noqa: E402
from mrcnn_kp.inference.predictor import Predictor, unmold_detections  # noqa: E402

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="exports need the TensorFlow backend")


# ----------------------------------------------------------------------------- stand-in model
class StandinDetections(KL.Layer):
    """Features [B, F] -> the inference output dict (boxes in molded pixels, 28x28 masks)."""

    def __init__(self, detections, side, num_keypoints, **kwargs):
        super().__init__(**kwargs)
        self.detections, self.side, self.num_keypoints = detections, side, num_keypoints

    def call(self, features):
        d, s, k = self.detections, float(self.side), self.num_keypoints
        b = ops.shape(features)[0]
        corner = ops.sigmoid(ops.reshape(features[:, :d * 2], (b, d, 2))) * s * 0.9 - 0.05 * s
        size = ops.sigmoid(ops.reshape(features[:, d * 2:d * 4], (b, d, 2))) * s * 0.5 + 1.0
        boxes = ops.concatenate([corner, corner + size], axis=-1)  # [B, D, 4] x1 y1 x2 y2
        scores = ops.sigmoid(features[:, d * 4:d * 5] * 4.0)  # [B, D]
        class_ids = ops.cast(scores > 0.3, "int32")  # [B, D]
        start = d * 5
        keypoints = ops.sigmoid(ops.reshape(features[:, start:start + d * k * 3],
                                            (b, d, k, 3))) * s  # [B, D, K, 3]
        start += d * k * 3
        masks = ops.sigmoid(ops.reshape(features[:, start:start + d * 28 * 28],
                                        (b, d, 28, 28)) * 3.0)  # [B, D, 28, 28]
        return {"boxes": boxes, "class_ids": class_ids, "scores": scores, "masks": masks,
                "keypoints": keypoints,
                "num_detections": ops.sum(class_ids, axis=1) - 1}  # one valid row left out

    def compute_output_spec(self, features):
        b, d, k = features.shape[0], self.detections, self.num_keypoints
        spec = keras.KerasTensor
        return {"boxes": spec((b, d, 4)), "class_ids": spec((b, d), "int32"),
                "scores": spec((b, d)), "masks": spec((b, d, 28, 28)),
                "keypoints": spec((b, d, k, 3)), "num_detections": spec((b,), "int32")}


def standin_inference_model(config):
    keras.utils.set_random_seed(0)
    side, d, k = config.IMAGE_MAX_DIM, config.DETECTION_MAX_INSTANCES, config.NUM_KEYPOINTS
    image = keras.Input((side, side, 3), name="input_image")
    meta = keras.Input((config.IMAGE_META_SIZE,), name="input_image_meta")
    x = KL.Conv2D(4, 4, strides=4, activation="relu", name="conv1")(
        KL.Rescaling(1 / 255.0)(image))
    x = KL.GlobalAveragePooling2D()(x)
    x = KL.Concatenate()([x, KL.Rescaling(1 / 128.0)(meta)])
    x = KL.Dense(d * (5 + k * 3 + 28 * 28), name="mrcnn_standin_head")(x)
    outputs = StandinDetections(d, side, k)(x)
    return keras.Model({"input_image": image, "input_image_meta": meta}, outputs)


@pytest.fixture(scope="module")
def config():
    return TinyConfig(IMAGES_PER_GPU=1)


@pytest.fixture(scope="module")
def model(config):
    return standin_inference_model(config)


def image_of(height, width, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3)).astype(np.uint8)
    return np.kron(base, np.ones((4, 4, 1), np.uint8))[:height, :width]  # blocky, like photos


SIZES = [(100, 64), (37, 200), (128, 128), (300, 260), (64, 48)]


# ----------------------------------------------------------------------------- molding
@pytest.mark.parametrize("height, width", SIZES)
def test_mold_image_equals_the_predictors_molding(config, model, height, width):
    image = image_of(height, width)
    molded, meta, window, scale = export.mold_image(tf.constant(image), config)
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
        exact = export.mold_image(tf.constant(image), config, exact=True)[0].numpy()
        fast = export.mold_image(tf.constant(image), config, exact=False)[0].numpy()
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
    ours = export.unmold_outputs({n: tf.constant(v) for n, v in outputs.items()},
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


# ----------------------------------------------------------------------------- formats
def predictor_result(model, config, image):
    return Predictor(model, config).detect([image])[0]


def assert_matches_predictor(out, ref, box_atol, score_atol):
    n = len(ref["class_ids"])
    assert int(out["num_detections"]) == n and n >= 2
    np.testing.assert_array_equal(out["class_ids"][:n], ref["class_ids"])
    np.testing.assert_allclose(out["boxes"][:n], ref["rois"], atol=box_atol)
    np.testing.assert_allclose(out["scores"][:n], ref["scores"], atol=score_atol)
    np.testing.assert_allclose(out["keypoints"][:n], ref["keypoints"], atol=box_atol)
    assert not out["boxes"][n:].any()


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, model, config):
    path = tmp_path_factory.mktemp("export") / "standin"
    export.export_saved_model(model, config, path, paste_masks=True)
    return tf.saved_model.load(str(path))


@pytest.mark.parametrize("height, width", [(100, 64), (300, 260)])
def test_saved_model_serves_any_image_size_like_the_predictor(saved_model, model, config,
                                                              height, width):
    image = image_of(height, width, seed=height)
    out = saved_model.signatures["serving_default"](image=tf.constant(image))
    out = {name: value.numpy() for name, value in out.items()}
    ref = predictor_result(model, config, image)
    assert_matches_predictor(out, ref, box_atol=1e-3, score_atol=1e-5)
    n = len(ref["class_ids"])
    assert out["masks"].shape == (config.DETECTION_MAX_INSTANCES, height, width)
    assert (out["masks"][:n].transpose(1, 2, 0).astype(bool) != ref["masks"]).mean() < 1e-4


def test_saved_model_serve_molded_is_the_raw_model(saved_model, model, config):
    molded, metas, _, _ = Predictor(model, config).mold_inputs([image_of(90, 128)])
    out = saved_model.signatures["serve_molded"](input_image=tf.constant(molded),
                                                 input_image_meta=tf.constant(metas))
    want = model.predict_on_batch({"input_image": molded, "input_image_meta": metas})
    for name in want:
        np.testing.assert_allclose(out[name].numpy(), want[name], atol=1e-5, err_msg=name)


def test_tflite_export_is_builtin_only_and_matches(tmp_path, model, config):
    """The stand-in has only builtin ops, so it runs in the pip interpreter."""
    report = export.export_tflite(model, config, tmp_path / "standin.tflite")
    assert report.builtin_only and report.flex_ops == []
    assert report.size_bytes > 10_000
    image = image_of(100, 64, seed=5)
    out = export.run_tflite(report.path, image)
    assert_matches_predictor(out, predictor_result(model, config, image), box_atol=0.05,
                             score_atol=1e-4)
    assert out["masks"].shape == (config.DETECTION_MAX_INSTANCES, 28, 28)


def test_plain_argmax_gives_the_indices_of_keras_argmax():
    values = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32)
    values[0, 0, :2] = [-0.0, 0.0]  # the case keras' bit trick exists for
    for axis in (None, 0, -1, 1):
        for keepdims in (False, True):
            want = keras.ops.argmax(values, axis=axis, keepdims=keepdims)
            got = export._plain_argmax(values, axis=axis, keepdims=keepdims)
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
            assert np.asarray(got).dtype == np.int32


def test_unsupported_ops_are_read_from_the_converter_message():
    """The allow_flex=False error names the ops, taken from the converter's message."""
    message = ("Some ops are not supported by the native TFLite runtime ... Flex ops: "
               "FlexCropAndResize, FlexNonMaxSuppressionV5\nDetails:\n\ttf.CropAndResize("
               "tensor<?x?x?x256xf32>) -> ...\n\ttf.Round(tensor<f64>) at fn(tf.round(...))")
    assert export._unsupported_ops(message) == ["CropAndResize", "NonMaxSuppressionV5", "Round"]


def test_onnx_export_matches(tmp_path, model, config):
    if not export.onnx_available():
        pytest.skip(export.ONNX_MISSING)
    pytest.importorskip("onnxruntime", reason=export.ONNX_MISSING)
    path = export.export_onnx(model, config, tmp_path / "standin.onnx")
    image = image_of(300, 260, seed=7)
    out = export.run_onnx(path, image)
    assert_matches_predictor(out, predictor_result(model, config, image), box_atol=0.05,
                             score_atol=1e-4)


# ----------------------------------------------------------------------------- mrcnn-kp export
def test_export_command_writes_each_format(tmp_path, monkeypatch, capsys, model, config):
    from mrcnn_kp import cli
    from mrcnn_kp.commands import _shared

    monkeypatch.setattr(_shared, "load_model",
                        lambda args: (Predictor(model, config), config, None))
    out = tmp_path / "standin.tflite"
    assert cli.main(["export", "--format", "tflite", "--weights", "none", "-o", str(out)]) == 0
    assert "TFLite builtin ops only" in capsys.readouterr().out
    assert out.stat().st_size > 10_000
    if not export.onnx_available():
        assert cli.main(["export", "--format", "onnx", "--weights", "none"]) == 1
        assert "pip install 'mrcnn_kp[onnx]'" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert cli.main(["export", "--weights", "none", "-o", str(tmp_path / "file")]) == 1
    assert "is a file; a SavedModel is a folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the real model
@pytest.fixture(scope="module")
def real_model():
    from mrcnn_kp.model.keypoint_rcnn import build_inference_model

    config = TinyConfig(IMAGES_PER_GPU=1)  # DETECTION_MIN_CONFIDENCE 0: D detections
    keras.utils.set_random_seed(0)
    return config, build_inference_model(config)


def test_real_model_saved_model_matches_the_predictor(tmp_path, real_model):
    config, model = real_model
    image = image_of(100, 64, seed=11)
    ref = predictor_result(model, config, image)
    export.export_saved_model(model, config, tmp_path / "tiny")
    serve = tf.saved_model.load(str(tmp_path / "tiny")).signatures["serving_default"]
    out = {name: value.numpy() for name, value in serve(image=tf.constant(image)).items()}
    assert_matches_predictor(out, ref, box_atol=1e-3, score_atol=1e-5)


@pytest.mark.parametrize("height, width", [(480, 640), (400, 1200), (1600, 1000), (64, 48)])
def test_mold_image_follows_the_torchvision_resize_mode(height, width):
    """TorchvisionKeypointConfig: the exported molding equals transforms.resize_image's
    (min(800 / short, 1333 / long), floored sizes, float bilinear, top-left, mean padding)."""
    from mrcnn_kp.config import TorchvisionKeypointConfig
    from mrcnn_kp.data import transforms

    config = TorchvisionKeypointConfig()
    image = image_of(height, width)
    molded, _, window, scale = export.mold_image(tf.constant(image), config)
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
    molded, meta, window, scale = export.mold_image(tf.constant(image), config)
    want, want_window, want_scale, _ = transforms.resize_image(image, config)
    assert molded.shape == (64, 128, 3) and tuple(meta.numpy()[4:7]) == (64, 128, 3)
    assert tuple(window.numpy()) == tuple(want_window)
    assert scale.numpy() == np.float32(want_scale)
    if mode == "square":
        np.testing.assert_array_equal(molded.numpy(), want)
    else:
        np.testing.assert_allclose(molded.numpy(), want, atol=0.02)
