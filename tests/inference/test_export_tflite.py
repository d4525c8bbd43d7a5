"""export_tflite: the stand-in model converts with builtin ops only and runs in the pip
interpreter as the Predictor detects; the allow_flex=False error names the converter's
unsupported ops. Tolerances: tests/inference/export_standin.py."""
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from export_standin import (assert_matches_predictor, image_of,  # noqa: E402
                            predictor_result)
from mrcnn_kp.inference import export_tflite  # noqa: E402

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="exports need the TensorFlow backend")


def test_tflite_export_is_builtin_only_and_matches(tmp_path, model, config):
    """The stand-in has only builtin ops, so it runs in the pip interpreter."""
    report = export_tflite.export_tflite(model, config, tmp_path / "standin.tflite")
    assert report.builtin_only and report.flex_ops == []
    assert report.size_bytes > 10_000
    image = image_of(100, 64, seed=5)
    out = export_tflite.run_tflite(report.path, image)
    assert_matches_predictor(out, predictor_result(model, config, image), box_atol=0.05,
                             score_atol=1e-4)
    assert out["masks"].shape == (config.DETECTION_MAX_INSTANCES, 28, 28)


def test_unsupported_ops_are_read_from_the_converter_message():
    """The allow_flex=False error names the ops, taken from the converter's message."""
    message = ("Some ops are not supported by the native TFLite runtime ... Flex ops: "
               "FlexCropAndResize, FlexNonMaxSuppressionV5\nDetails:\n\ttf.CropAndResize("
               "tensor<?x?x?x256xf32>) -> ...\n\ttf.Round(tensor<f64>) at fn(tf.round(...))")
    assert export_tflite._unsupported_ops(message) == ["CropAndResize", "NonMaxSuppressionV5",
                                                       "Round"]
