"""The TFLite export: the serving function (inference.export_graph) as a `.tflite` file, with a
report of the TensorFlow (Flex) ops it needed, and a runner for one image.

TFLite has no float64 kernels, so the molding runs in float32 (exact=False, see
export_graph.resize_bilinear_like_pillow), and the model is traced with portable_ops, whose
NMS is inference.tflite_nms (TFLite's kernel fed so it selects what TensorFlow's does).
"""
import dataclasses
import os
import re

from mrcnn_kp.inference.export_graph import (make_serving_function, portable_ops,
                                             require_tensorflow)
from mrcnn_kp.utils import get_logger

log = get_logger("mrcnn_kp.export")


@dataclasses.dataclass
class TFLiteReport:
    """What the TFLite conversion needed."""

    path: str
    builtin_only: bool  # True: every op is a TFLite builtin (runs on any TFLite runtime)
    flex_ops: list  # TensorFlow ops kept as Flex (SELECT_TF_OPS): need the Flex delegate
    size_bytes: int

    def summary(self):
        if self.builtin_only:
            return f"{self.path}: {self.size_bytes:,} bytes, TFLite builtin ops only"
        causes = "; ".join(f"{op} ({KNOWN_FLEX_CAUSES.get(op, 'no TFLite builtin kernel')})"
                           for op in self.flex_ops)
        return (f"{self.path}: {self.size_bytes:,} bytes; needs the Flex delegate "
                f"(tensorflow-lite-select-tf-ops) for: {causes}")


# Ops the models emit that TFLite has no builtin for, and where they come from.
KNOWN_FLEX_CAUSES = {
    "BitwiseAnd": "keras.ops.argmax on the TensorFlow backend bit-masks float inputs to order "
                  "-0.0 before 0.0 (export_tflite traces with export_graph.plain_argmax instead)",
    "CropAndResize": "tf.image.crop_and_resize, matterport's ROI pooling mode",
}


def _unsupported_ops(message):
    """The TF op names a converter error lists as not supported by TFLite builtins."""
    names = set(re.findall(r"\btf\.([A-Z]\w+)\(", message))
    names |= {m[len("Flex"):] for m in re.findall(r"\bFlex\w+", message)}
    return sorted(names)


def tflite_ops(flatbuffer):
    """The op names in a .tflite flatbuffer (builtins upper case, Flex ops as FlexName)."""
    import contextlib
    import io

    tf = require_tensorflow()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        text = tf.lite.experimental.Analyzer.analyze(model_content=flatbuffer)
    return sorted(set(re.findall(r"Op#\d+ (\w+)\(", (text or "") + printed.getvalue())))


def export_tflite(model, config, path, paste_masks=False, allow_flex=True):
    """Convert the serving function to a `.tflite` file. Returns a TFLiteReport.

    Converts with TFLite builtins plus, if allow_flex, TensorFlow ops (SELECT_TF_OPS) for
    what has no builtin kernel; the report names those Flex ops. allow_flex=False converts
    with builtins only and raises RuntimeError naming the ops that do not convert.
    """
    import tempfile

    import keras

    tf = require_tensorflow()
    path = os.fspath(path)
    # TFLite has no float64 kernels: the float32 resize (off by 1 in rare pixels, see
    # resize_bilinear_like_pillow) keeps the preprocessing builtin.
    serve = make_serving_function(model, config, paste_masks=paste_masks, exact=False)
    # Keras 3's path to TFLite goes through a SavedModel (converting the tf.function directly
    # reads Keras variables as uninitialised memory).
    with tempfile.TemporaryDirectory(prefix="mrcnn_kp_tflite_") as saved:
        archive = keras.export.ExportArchive()
        archive.track(model)
        with portable_ops(tflite=True):
            archive.add_endpoint("serving_default", serve)
            archive.write_out(saved, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved,
                                                             signature_keys=["serving_default"])
        ops_sets = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if allow_flex:
            ops_sets.append(tf.lite.OpsSet.SELECT_TF_OPS)
        converter.target_spec.supported_ops = ops_sets
        try:
            flatbuffer = converter.convert()
        except Exception as exc:  # ConverterError lists the ops without a builtin kernel
            if allow_flex:
                raise
            raise RuntimeError(f"TFLite builtins cannot express the model; ops without a "
                               f"builtin kernel: {', '.join(_unsupported_ops(str(exc))) or exc}"
                               ) from None
    flex_ops = [name[len("Flex"):] for name in tflite_ops(flatbuffer) if name.startswith("Flex")]
    from mrcnn_kp.utils import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(flatbuffer)
    report = TFLiteReport(path, not flex_ops, flex_ops, len(flatbuffer))
    log.info(report.summary())
    return report


def flex_ops_message(path, flex):
    """Why a .tflite file that needs Flex ops cannot run here."""
    return (f"{path} needs the Flex delegate for {', '.join(flex)}, which the pip LiteRT and "
            f"TensorFlow interpreters do not link; run it with a TFLite runtime built with Flex "
            f"(tensorflow-lite-select-tf-ops)")


def run_tflite(path, image, runtime="auto"):
    """Run a `.tflite` export on one uint8 [H, W, 3] image -> dict of numpy arrays.

    Runs on the LiteRT interpreter (ai_edge_litert) when it is installed, else on
    tf.lite.Interpreter (runtime "litert" or "tensorflow" to choose); neither has the Flex
    delegate: a model that needs Flex ops raises RuntimeError naming them.
    """
    from mrcnn_kp.inference.exported import ExportedModel

    return ExportedModel(path, format="tflite", tflite_runtime=runtime).run(image)
