"""export_onnx: the stand-in model converted with tf2onnx runs on onnxruntime as the Predictor
detects (skipped without the [onnx] extra). Tolerances: tests/inference/export_standin.py."""
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from export_standin import (assert_matches_predictor, image_of,  # noqa: E402
                            predictor_result)
from mrcnn_kp.inference import export_onnx  # noqa: E402

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="exports need the TensorFlow backend")


def test_onnx_export_matches(tmp_path, model, config):
    if not export_onnx.onnx_available():
        pytest.skip(export_onnx.ONNX_MISSING)
    pytest.importorskip("onnxruntime", reason=export_onnx.ONNX_MISSING)
    path = export_onnx.export_onnx(model, config, tmp_path / "standin.onnx")
    image = image_of(300, 260, seed=7)
    out = export_onnx.run_onnx(path, image)
    assert_matches_predictor(out, predictor_result(model, config, image), box_atol=0.05,
                             score_atol=1e-4)
