"""export, the entry point: `mrcnn-kp export` writes each format through export.export (the
stand-in model of tests/inference/export_standin.py behind the command's model loading) and
says what it cannot do (no [onnx] extra, a SavedModel path that is a file)."""
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from mrcnn_kp.inference import export  # noqa: E402
from mrcnn_kp.inference.predictor import Predictor  # noqa: E402

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="exports need the TensorFlow backend")


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
