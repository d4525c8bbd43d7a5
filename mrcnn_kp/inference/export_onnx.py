"""The ONNX export: the serving function (inference.export_graph) converted with tf2onnx, and a
runner for one image on onnxruntime. Needs the [onnx] extra (tf2onnx, onnx, onnxruntime).
"""
import os

from mrcnn_kp.inference.export_graph import (make_serving_function, portable_ops,
                                             require_tensorflow)
from mrcnn_kp.utils import get_logger

log = get_logger("mrcnn_kp.export")

ONNX_MISSING = ("ONNX export needs tf2onnx and onnx (and onnxruntime to run the result): "
                "pip install 'mrcnn_kp[onnx]' or pip install tf2onnx onnx onnxruntime")


def onnx_available():
    try:
        import onnx  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError:
        return False
    return True


def export_onnx(model, config, path, paste_masks=False, opset=17):
    """Convert the serving function to ONNX with tf2onnx. Returns the path."""
    require_tensorflow()
    path = os.fspath(path)
    if not onnx_available():
        raise RuntimeError(ONNX_MISSING)
    try:  # Keras' own fix for tf2onnx under numpy 2 (used by model.export(format="onnx"))
        from keras.src.export.tf2onnx_lib import patch_tf2onnx

        patch_tf2onnx()
    except ImportError:  # pragma: no cover - keras moved it
        pass
    import tf2onnx

    serve = make_serving_function(model, config, paste_masks=paste_masks)
    from mrcnn_kp.utils import atomic_path

    with atomic_path(path) as tmp, portable_ops():
        tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=opset,
                                      output_path=tmp)
    log.info(f"ONNX model written to {path} (opset {opset})")
    return path


def run_onnx(path, image):
    """Run an ONNX export with onnxruntime on one uint8 [H, W, 3] image -> dict of numpy."""
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(None, {session.get_inputs()[0].name: np.asarray(image, np.uint8)})
    return dict(zip(names, values))
