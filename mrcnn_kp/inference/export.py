"""Deployment exports of the inference model: TensorFlow SavedModel, TFLite and ONNX.

    from mrcnn_kp.inference import export
    export.export(model, config, "exported/person_kp", format="saved_model")  # or tflite, onnx
    export.export_saved_model(model, config, "exported/person_kp")      # tf.saved_model.load
    export.export_tflite(model, config, "exported/person_kp.tflite")    # -> TFLiteReport
    export.export_onnx(model, config, "exported/person_kp.onnx")        # needs the [onnx] extra

Every format serves the same function, `serving_default`: one uint8 RGB image of any size ->
boxes, class_ids, scores, keypoints, masks (and mask_boxes) in original-image pixels, valid
rows first, and num_detections (inference.export_graph, which molds and un-molds inside the
graph as the Predictor does). Each format has its module: export_saved_model, export_tflite
(with run_tflite), export_onnx (with run_onnx); this one is their entry point, the one
`mrcnn-kp export` calls. inference.exported loads any of the files back.

Exports need the TensorFlow backend (KERAS_BACKEND=tensorflow, the default).
"""
from mrcnn_kp.inference.export_onnx import ONNX_MISSING, export_onnx, onnx_available, run_onnx
from mrcnn_kp.inference.export_saved_model import export_saved_model
from mrcnn_kp.inference.export_tflite import TFLiteReport, export_tflite, run_tflite

__all__ = ["FORMATS", "export", "export_saved_model", "export_tflite", "TFLiteReport",
           "run_tflite", "export_onnx", "run_onnx", "onnx_available", "ONNX_MISSING"]

FORMATS = ("saved_model", "tflite", "onnx")


def export(model, config, path, format="saved_model", paste_masks=False):
    """Export in one of FORMATS; returns the path (TFLite: the TFLiteReport)."""
    if format == "saved_model":
        return export_saved_model(model, config, path, paste_masks=paste_masks)
    if format == "tflite":
        return export_tflite(model, config, path, paste_masks=paste_masks)
    if format == "onnx":
        return export_onnx(model, config, path, paste_masks=paste_masks)
    raise ValueError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
