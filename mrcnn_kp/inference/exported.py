"""Exported models (SavedModel folder, `.tflite`, `.onnx`) run as a Predictor runs.

    from mrcnn_kp.inference import exported
    model = exported.load_exported("exported/person_kp.tflite")
    model.format                     # "saved_model", "tflite" or "onnx"
    model.run(image)                 # the serving outputs (mrcnn_kp.inference.export_graph), numpy
    model.detect([image, ...])       # Predictor.detect's result dicts, e.g. for coco_eval

`detect` turns the serving outputs into Predictor.detect's dict per image: rois [n, 4]
(x1, y1, x2, y2), class_ids [n], scores [n], keypoints [n, K, 3] and, when the export has
masks, masks [H, W, n] bool (box-relative probabilities pasted with predictor.paste_mask, or
the export's own pasted masks). So `coco_eval.evaluate_coco(model, ...)` scores an export
exactly as it scores the Keras model, which is what `mrcnn-kp evaluate --model` does.

TFLite files run on the LiteRT interpreter (`ai_edge_litert`, the `[litert]` extra) when it is
installed, else on TensorFlow's tf.lite.Interpreter; ONNX files on onnxruntime (`[onnx]`).
"""
import os

import numpy as np

FORMATS = ("saved_model", "tflite", "onnx")
LITERT_MISSING = "pip install 'mrcnn_kp[litert]' (ai-edge-litert)"


def format_of(path):
    """The export format of `path` from its name: a folder is a SavedModel."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return "saved_model"
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".tflite":
        return "tflite"
    if suffix == ".onnx":
        return "onnx"
    if not os.path.exists(path):
        raise FileNotFoundError(f"exported model not found: {path}")
    raise ValueError(f"{path}: not an exported model (a SavedModel folder, a .tflite or an "
                     f".onnx file)")


def litert_available():
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    except ImportError:
        return False
    return True


def tflite_interpreter(flatbuffer, num_threads=None, runtime="auto"):
    """An interpreter for a .tflite flatbuffer -> (interpreter, runtime name).

    runtime: "litert" (ai_edge_litert), "tensorflow" (tf.lite.Interpreter) or "auto" (LiteRT
    when installed). num_threads: None for the runtime's default.
    """
    if runtime not in ("auto", "litert", "tensorflow"):
        raise ValueError(f"runtime must be auto, litert or tensorflow, got {runtime!r}")
    if runtime == "litert" or (runtime == "auto" and litert_available()):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise RuntimeError(f"the LiteRT interpreter is not installed: {LITERT_MISSING}"
                               ) from None
        return Interpreter(model_content=flatbuffer, num_threads=num_threads), "litert"
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():  # tf.lite.Interpreter warns that LiteRT replaces it
        warnings.simplefilter("ignore")
        return tf.lite.Interpreter(model_content=flatbuffer, num_threads=num_threads), \
            "tensorflow"


class ExportedModel:
    """One exported model, loaded once; `run` and `detect` as in the module docstring."""

    def __init__(self, path, format=None, num_threads=None, tflite_runtime="auto"):
        self.path = os.fspath(path)
        self.format = format or format_of(self.path)
        if self.format not in FORMATS:
            raise ValueError(f"unknown export format {self.format!r}; choose one of "
                             f"{', '.join(FORMATS)}")
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"exported model not found: {self.path}")
        self.runtime = self.format
        loader = {"saved_model": self._load_saved_model, "tflite": self._load_tflite,
                  "onnx": self._load_onnx}[self.format]
        self._run, self.output_names = loader(num_threads, tflite_runtime)

    # ------------------------------------------------------------------ loading
    def _load_saved_model(self, num_threads, tflite_runtime):
        import tensorflow as tf

        serve = tf.saved_model.load(self.path).signatures["serving_default"]
        self.runtime = "tensorflow"

        def run(image):
            return {k: v.numpy() for k, v in serve(image=tf.constant(image)).items()}

        return run, sorted(serve.structured_outputs)

    def _load_tflite(self, num_threads, tflite_runtime):
        from mrcnn_kp.inference.export_tflite import flex_ops_message, tflite_ops

        with open(self.path, "rb") as f:
            flatbuffer = f.read()
        flex = [name for name in tflite_ops(flatbuffer) if name.startswith("Flex")]
        if flex:
            raise RuntimeError(flex_ops_message(self.path, flex))
        interpreter, self.runtime = tflite_interpreter(flatbuffer, num_threads, tflite_runtime)
        runner = interpreter.get_signature_runner()
        outputs = interpreter.get_signature_list()
        outputs = sorted(next(iter(outputs.values()))["outputs"])

        def run(image):
            return {k: np.asarray(v) for k, v in runner(image=image).items()}

        return run, outputs

    def _load_onnx(self, num_threads, tflite_runtime):
        try:
            import onnxruntime
        except ImportError:
            from mrcnn_kp.inference.export_onnx import ONNX_MISSING

            raise RuntimeError(ONNX_MISSING) from None
        options = onnxruntime.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        session = onnxruntime.InferenceSession(self.path, options,
                                               providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        input_name = session.get_inputs()[0].name
        self.runtime = "onnxruntime"

        def run(image):
            return dict(zip(names, session.run(None, {input_name: image})))

        return run, sorted(names)

    # ------------------------------------------------------------------ running
    @property
    def has_masks(self):
        return "masks" in self.output_names

    def run(self, image):
        """One uint8 RGB image [H, W, 3] -> the serving outputs (dict of numpy arrays)."""
        image = np.ascontiguousarray(image, np.uint8)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected one RGB image [H, W, 3], got shape {image.shape}")
        return self._run(image)

    def detect(self, images):
        """Images (uint8 RGB [H, W, 3]) -> one Predictor.detect result dict each."""
        return [outputs_to_result(self.run(image), image.shape) for image in images]


def outputs_to_result(outputs, image_shape):
    """One image's serving outputs -> Predictor.detect's result dict (see the module)."""
    from mrcnn_kp.inference.predictor import paste_mask

    height, width = int(image_shape[0]), int(image_shape[1])
    n = int(np.asarray(outputs["num_detections"]))
    result = {
        "rois": np.asarray(outputs["boxes"], np.float32)[:n],
        "class_ids": np.asarray(outputs["class_ids"]).astype(np.int32)[:n],
        "scores": np.asarray(outputs["scores"], np.float32)[:n],
    }
    if "keypoints" in outputs:
        result["keypoints"] = np.asarray(outputs["keypoints"], np.float32)[:n]
    if "masks" in outputs:
        masks = np.asarray(outputs["masks"])[:n]
        if masks.dtype == np.uint8:  # exported with paste_masks=True: [n, H, W] 0/1
            result["masks"] = masks.transpose(1, 2, 0).astype(bool)
        else:  # [n, m, m] probabilities over mask_boxes
            boxes = np.asarray(outputs["mask_boxes"], np.float32)[:n]
            pasted = np.zeros((height, width, n), bool)
            for i in range(n):
                pasted[:, :, i] = paste_mask(masks[i], boxes[i], (height, width))
            result["masks"] = pasted
    return result


def load_exported(path, num_threads=None, tflite_runtime="auto"):
    """An ExportedModel for a SavedModel folder, a .tflite or an .onnx file."""
    return ExportedModel(path, num_threads=num_threads, tflite_runtime=tflite_runtime)
