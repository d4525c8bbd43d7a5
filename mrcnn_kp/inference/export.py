"""Deployment exports of the inference model: TensorFlow SavedModel, TFLite and ONNX.

    from mrcnn_kp.inference import export
    export.export_saved_model(model, config, "exported/person_kp")      # tf.saved_model.load
    export.export_tflite(model, config, "exported/person_kp.tflite")    # -> TFLiteReport
    export.export_onnx(model, config, "exported/person_kp.onnx")        # needs the [onnx] extra

Every format serves the same function, `serving_default`:

    image  uint8 [H, W, 3], any H and W (one RGB image)
    ->  boxes      float32 [D, 4]  (x1, y1, x2, y2) in original-image pixels, clipped to it
        class_ids  int32   [D]     (0 = empty slot)
        scores     float32 [D]
        keypoints  float32 [D, K, 3] (x, y, score) in original-image pixels
        masks      float32 [D, m, m] mask probability over `mask_boxes` (box-relative, m = 28),
                   or, exported with paste_masks=True, uint8 [D, H, W] full-image 0/1 masks
        mask_boxes float32 [D, 4]  the unclipped boxes the masks cover (paste with
                                   mrcnn_kp.inference.predictor.paste_mask)
        num_detections int32 []    valid rows, which come first; the other rows are zero

Inside, the image is resized and padded exactly as `Predictor.mold_inputs` does
(data.transforms.resize_image: matterport's "square" scale, Pillow's bilinear filter,
centred zero padding), the model runs on the molded square, and the detections are un-molded
as `predictor.unmold_detections` does. The SavedModel also has `serve_molded`, the raw model
({input_image [B, S, S, 3] float32, input_image_meta [B, M]} -> the molded-pixel dict of
docs/DESIGN.md, B = config.BATCH_SIZE, static) for servers that batch and mold
themselves.

Exports need the TensorFlow backend (KERAS_BACKEND=tensorflow, the default).
"""
import contextlib
import dataclasses
import os
import re

from mrcnn_kp.utils import get_logger

log = get_logger("mrcnn_kp.export")

FORMATS = ("saved_model", "tflite", "onnx")
MASK_THRESHOLD = 0.5
_PILLOW_PRECISION_BITS = 22  # Pillow's fixed-point weights for 8-bit images (32 - 8 - 2)


def _tf():
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"exporting needs the TensorFlow backend, this process runs Keras on "
            f"{keras.backend.backend()!r}; run it with KERAS_BACKEND=tensorflow")
    import tensorflow as tf

    return tf


# ------------------------------------------------------------------------------ molding
def pillow_bilinear_weights(in_size, out_size, dtype="float64"):
    """[out_size, in_size] integer weights of Pillow's bilinear filter, in units of 2**-22.

    Pillow (ImagingResample) centres output pixel i at (i + 0.5) * in / out, widens the
    triangle filter by the scale when shrinking (it anti-aliases), samples it at the input
    pixel centres, truncates at the image border, normalises each row and rounds the weights
    to 22-bit fixed point: the integers returned here (as floats of `dtype`).
    """
    tf = _tf()
    in_f = tf.cast(in_size, dtype)
    out_f = tf.cast(out_size, dtype)
    scale = in_f / out_f
    filter_scale = tf.maximum(scale, 1.0)
    centres = (tf.cast(tf.range(out_size), dtype) + 0.5) * scale  # [out]
    pixels = tf.cast(tf.range(in_size), dtype) + 0.5  # [in]
    weights = tf.nn.relu(1.0 - tf.abs(pixels[None, :] - centres[:, None]) / filter_scale)
    weights = weights / tf.reduce_sum(weights, axis=1, keepdims=True)  # [out, in]
    return tf.floor(weights * float(1 << _PILLOW_PRECISION_BITS) + 0.5)


def _fixed_point_to_uint8(sums):
    """Pillow's clip8((sum + 2**21) >> 22) for sums of integer weights times pixel values."""
    tf = _tf()
    half, unit = float(1 << (_PILLOW_PRECISION_BITS - 1)), float(1 << _PILLOW_PRECISION_BITS)
    return tf.cast(tf.clip_by_value(tf.floor((sums + half) / unit), 0.0, 255.0), tf.uint8)


_SPLIT = 256.0  # weights = high * 256 + low: float32 sums of either part stay exact


def _split_sums_to_uint8(high, low):
    """Pillow's clip8((sum + 2**21) >> 22) from the sum as high * 256 + low (float32 holding
    integers below 2**24) in int32 arithmetic, which holds the sum exactly."""
    tf = _tf()
    total = (tf.cast(high, tf.int32) * int(_SPLIT) + tf.cast(low, tf.int32)
             + (1 << (_PILLOW_PRECISION_BITS - 1)))
    return tf.cast(tf.clip_by_value(tf.math.floordiv(total, 1 << _PILLOW_PRECISION_BITS), 0, 255),
                   tf.uint8)


def resize_bilinear_like_pillow(image, height, width, exact=True):
    """uint8 [H, W, C] -> uint8 [height, width, C] as Pillow's Image.resize(BILINEAR).

    Two separable passes, horizontal then vertical, each rounded to uint8, as in Pillow.
    exact=True computes Pillow's integer weights and sums in float64, so the result equals
    Pillow bit for bit. exact=False (for TFLite, which has no float64 kernels) computes the
    weights in float32, which can move one by a unit of 2**-22 (a value changes only where
    its sum then crosses a rounding boundary: 0.004 % of the values of 6 COCO photos shrunk
    to 512 px, 0.01 % at 1024 px, 0.4 % of a 100 x 64 picture enlarged 1.28 times, whose
    weights often land on a boundary), and sums them exactly all the same: each weight split
    as high * 256 + low, both float32 sums stay below 2**24 (exact whatever the order; < 256
    taps per output pixel, i.e. shrinking less than 128 times), combined in int32.
    """
    tf = _tf()
    shape = tf.shape(image)
    if exact:
        wx = pillow_bilinear_weights(shape[1], width, tf.float64)  # [width, W]
        wy = pillow_bilinear_weights(shape[0], height, tf.float64)  # [height, H]
        rows = _fixed_point_to_uint8(tf.einsum("xj,hjc->hxc", wx, tf.cast(image, tf.float64)))
        out = tf.einsum("yi,ixc->yxc", wy, tf.cast(rows, tf.float64))
        return _fixed_point_to_uint8(out)  # [height, width, C]

    def split(weights):
        high = tf.floor(weights / _SPLIT)
        return high, weights - high * _SPLIT

    wx_high, wx_low = split(pillow_bilinear_weights(shape[1], width, tf.float32))
    wy_high, wy_low = split(pillow_bilinear_weights(shape[0], height, tf.float32))
    pixels = tf.cast(image, tf.float32)
    rows = _split_sums_to_uint8(tf.einsum("xj,hjc->hxc", wx_high, pixels),
                                tf.einsum("xj,hjc->hxc", wx_low, pixels))  # [H, width, C]
    rows = tf.cast(rows, tf.float32)
    return _split_sums_to_uint8(tf.einsum("yi,ixc->yxc", wy_high, rows),
                                tf.einsum("yi,ixc->yxc", wy_low, rows))  # [height, width, C]


def compute_scale(height, width, config, dtype="float64"):
    """data.transforms.compute_scale in TF. float64 computes it as Python does; float32 (for
    TFLite) can round a size the other way when it lands within ~1e-6 of .5."""
    tf = _tf()
    h = tf.cast(height, dtype)
    w = tf.cast(width, dtype)
    if getattr(config, "IMAGE_RESIZE_MODE", "square") == "torchvision":
        max_side = getattr(config, "IMAGE_RESIZE_MAX_SIDE", 0) or config.IMAGE_MAX_DIM
        scale = tf.minimum(float(config.IMAGE_MIN_DIM) / tf.minimum(h, w),
                           float(max_side) / tf.maximum(h, w))
        longest = tf.maximum(h, w)
        scale = tf.where(tf.round(longest * scale) > config.IMAGE_MAX_DIM,
                         float(config.IMAGE_MAX_DIM) / longest, scale)
        return _fit_canvas(h, w, scale, config)
    scale = tf.ones([], dtype)
    if config.IMAGE_MIN_DIM:
        scale = tf.maximum(float(config.IMAGE_MIN_DIM) / tf.minimum(h, w), 1.0)
    if config.IMAGE_MIN_SCALE:
        scale = tf.maximum(scale, float(config.IMAGE_MIN_SCALE))
    if config.IMAGE_MAX_DIM:
        longest = tf.maximum(h, w)
        scale = tf.where(tf.round(longest * scale) > config.IMAGE_MAX_DIM,
                         float(config.IMAGE_MAX_DIM) / longest, scale)
    return _fit_canvas(h, w, scale, config)


def _fit_canvas(h, w, scale, config):
    """transforms._fit_canvas in TF: the scale lowered where the resized image would not fit
    the (possibly non-square) canvas."""
    tf = _tf()
    canvas_h, canvas_w = (float(v) for v in config.IMAGE_SHAPE[:2])
    too_big = tf.logical_or(tf.round(h * scale) > canvas_h, tf.round(w * scale) > canvas_w)
    return tf.where(too_big, tf.minimum(canvas_h / h, canvas_w / w), scale)


def mold_image(image, config, exact=True):
    """One uint8 [H, W, 3] image -> (molded float32 [CH, CW, 3] (the canvas, IMAGE_SHAPE),
    image_meta float32 [M], window int32 [4] (y1, x1, y2, x2), scale float32 []), as
    Predictor.mold_inputs.

    exact=True computes the scale in float64 and resizes bit-exactly like Pillow; False keeps
    every op float32 for TFLite (see resize_bilinear_like_pillow and compute_scale).
    """
    tf = _tf()
    dtype = tf.float64 if exact else tf.float32
    canvas_h, canvas_w = (int(v) for v in config.IMAGE_SHAPE[:2])
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    scale = compute_scale(height, width, config, dtype)
    fill = tf.zeros([3], tf.float32)
    if getattr(config, "IMAGE_RESIZE_MODE", "square") == "torchvision":  # as transforms
        # floored sizes, float bilinear (tf's half-pixel bilinear is torch's), top-left
        new_h = tf.cast(tf.floor(tf.cast(height, dtype) * scale), tf.int32)
        new_w = tf.cast(tf.floor(tf.cast(width, dtype) * scale), tf.int32)
        resized = tf.image.resize(tf.cast(image, tf.float32), tf.stack([new_h, new_w]),
                                  method="bilinear", antialias=False)
        top = left = tf.zeros([], tf.int32)
        fill = tf.constant([float(v) for v in config.MEAN_PIXEL], tf.float32)
    else:
        new_h = tf.cast(tf.round(tf.cast(height, dtype) * scale), tf.int32)
        new_w = tf.cast(tf.round(tf.cast(width, dtype) * scale), tf.int32)
        # Same size gives identity weights, so no branch is needed for unscaled images.
        resized = resize_bilinear_like_pillow(image, new_h, new_w, exact)  # uint8 [new_h, new_w]
        top = (canvas_h - new_h) // 2
        left = (canvas_w - new_w) // 2
    molded = tf.pad(tf.cast(resized, tf.float32) - fill,
                    [[top, canvas_h - new_h - top], [left, canvas_w - new_w - left],
                     [0, 0]]) + fill
    molded = tf.reshape(molded, (canvas_h, canvas_w, 3))  # [CH, CW, 3], static
    window = tf.stack([top, left, top + new_h, left + new_w])  # [4] int32
    scale32 = tf.cast(scale, tf.float32)
    meta = tf.concat([
        tf.zeros([1]),  # image_id
        tf.cast(tf.stack([height, width, 3]), tf.float32),  # original shape
        tf.constant([canvas_h, canvas_w, 3], tf.float32),  # molded shape
        tf.cast(window, tf.float32),
        scale32[None],
        tf.zeros([config.NUM_CLASSES]),  # active_class_ids, zeros at inference (matterport)
    ], axis=0)
    return molded, meta, window, scale32


# ------------------------------------------------------------------------------ un-molding
def paste_masks(probs, boxes, height, width, threshold=MASK_THRESHOLD):
    """[D, m, m] probabilities over boxes [D, 4] (x1, y1, x2, y2) -> uint8 [D, H, W] 0/1.

    The same sampling as predictor.paste_mask: each pixel centre inside the box reads the
    probability bilinearly (cell centres at j + 0.5 of m cells across the box, clamped to the
    outer cells); pixels whose centre is outside the box are 0.
    """
    tf = _tf()
    cells = tf.cast(tf.shape(probs)[1], tf.float32)

    def sampling(start, end, limit):  # start, end [D] -> [D, limit, m]
        centres = tf.range(tf.cast(limit, tf.float32)) + 0.5  # [limit]
        length = tf.maximum(end - start, 1e-6)[:, None]
        u = (centres[None, :] - start[:, None]) / length * cells - 0.5  # [D, limit]
        u = tf.clip_by_value(u, 0.0, cells - 1.0)
        lo = tf.floor(u)
        frac = u - lo
        hi = tf.minimum(lo + 1.0, cells - 1.0)
        grid = tf.range(cells)[None, None, :]  # [1, 1, m]
        weights = (tf.cast(tf.equal(grid, lo[..., None]), tf.float32) * (1.0 - frac)[..., None]
                   + tf.cast(tf.equal(grid, hi[..., None]), tf.float32) * frac[..., None])
        inside = (centres[None, :] >= start[:, None]) & (centres[None, :] <= end[:, None]) & (
            (end > start)[:, None])
        return weights * tf.cast(inside, tf.float32)[..., None]

    rows = sampling(boxes[:, 1], boxes[:, 3], height)  # [D, H, m]
    cols = sampling(boxes[:, 0], boxes[:, 2], width)  # [D, W, m]
    full = tf.einsum("dhi,dij,dwj->dhw", rows, tf.cast(probs, tf.float32), cols)
    return tf.cast(full >= threshold, tf.uint8)


def unmold_outputs(outputs, window, scale, height, width, paste=False):
    """One image's molded-pixel outputs -> original pixels, valid rows first (see module doc).

    outputs: boxes [D, 4], class_ids [D], scores [D], keypoints [D, K, 3], masks [D, m, m]
    (optional), num_detections []. The same rules as predictor.unmold_detections: a row is
    valid when it is within num_detections, has class > 0 and a positive clipped area.
    """
    tf = _tf()
    wy1 = tf.cast(window[0], tf.float32)
    wx1 = tf.cast(window[1], tf.float32)
    w_f = tf.cast(width, tf.float32)
    h_f = tf.cast(height, tf.float32)
    class_ids = tf.cast(outputs["class_ids"], tf.int32)  # [D]
    count = tf.cast(tf.reshape(outputs["num_detections"], []), tf.int32)
    scale = tf.cast(scale, tf.float32)  # one factor, or (y, x) factors
    sy, sx = (scale, scale) if scale.shape.rank == 0 else (scale[0], scale[1])
    unclipped = (tf.cast(outputs["boxes"], tf.float32) - tf.stack([wx1, wy1, wx1, wy1])) / \
        tf.stack([sx, sy, sx, sy])
    lows = tf.zeros([4])
    highs = tf.stack([w_f, h_f, w_f, h_f])
    boxes = tf.clip_by_value(unclipped, lows, highs)  # [D, 4]
    num = tf.shape(class_ids)[0]
    valid = (tf.range(num) < count) & (class_ids > 0) & (boxes[:, 2] > boxes[:, 0]) & (
        boxes[:, 3] > boxes[:, 1])
    order = tf.argsort(tf.cast(tf.logical_not(valid), tf.int32), stable=True)  # valid first
    keep = tf.cast(tf.gather(valid, order), tf.float32)  # [D] 1 for the valid rows

    def take(values):
        values = tf.gather(values, order)
        mask = tf.reshape(keep, [-1] + [1] * (len(values.shape) - 1))
        return values * tf.cast(mask, values.dtype)

    result = {
        "boxes": take(boxes),
        "class_ids": take(class_ids),
        "scores": take(tf.cast(outputs["scores"], tf.float32)),
        "num_detections": tf.reduce_sum(tf.cast(valid, tf.int32)),
    }
    if outputs.get("keypoints") is not None:
        keypoints = tf.cast(outputs["keypoints"], tf.float32)  # [D, K, 3]
        kx = tf.clip_by_value((keypoints[..., 0] - wx1) / sx, 0.0, w_f)
        ky = tf.clip_by_value((keypoints[..., 1] - wy1) / sy, 0.0, h_f)
        result["keypoints"] = take(tf.stack([kx, ky, keypoints[..., 2]], axis=-1))
    if outputs.get("masks") is not None:
        probs = take(tf.cast(outputs["masks"], tf.float32))  # [D, m, m]
        mask_boxes = take(unclipped)
        result["mask_boxes"] = mask_boxes
        result["masks"] = paste_masks(probs, mask_boxes, height, width) if paste else probs
    return result


# ------------------------------------------------------------------------------ the function
def make_serving_function(model, config, paste_masks=False, exact=True):
    """A tf.function: uint8 image [H, W, 3] -> the dict of the module docstring."""
    tf = _tf()

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image")])
    def serve(image):
        molded, meta, window, scale = mold_image(image, config, exact)
        outputs = model({"input_image": molded[None], "input_image_meta": meta[None]},
                         training=False)
        one = {name: value[0] for name, value in outputs.items()}
        shape = tf.shape(image)
        if getattr(config, "IMAGE_RESIZE_MODE", "square") == "torchvision":  # per-axis ratios
            scale = tf.cast(window[2:4], tf.float32) / tf.cast(shape[:2], tf.float32)
        return unmold_outputs(one, window, scale, shape[0], shape[1], paste=paste_masks)

    return serve


def _molded_signature(config):
    """BATCH_SIZE molded images: the batch is static because the pyramid ROIAlign lays the
    whole batch's feature maps out in one table (ops.roi_align)."""
    tf = _tf()
    batch = config.BATCH_SIZE
    return [{
        "input_image": tf.TensorSpec([batch] + list(config.IMAGE_SHAPE), tf.float32,
                                     name="input_image"),
        "input_image_meta": tf.TensorSpec([batch, config.IMAGE_META_SIZE], tf.float32,
                                          name="input_image_meta"),
    }]


# ------------------------------------------------------------------------------ SavedModel
def export_saved_model(model, config, path, paste_masks=False):
    """Write a TensorFlow SavedModel with `serving_default` (uint8 image of any size) and
    `serve_molded` (the raw model on molded batches). Returns the path."""
    import keras

    _tf()
    path = os.fspath(path)
    serve = make_serving_function(model, config, paste_masks=paste_masks)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve)
    archive.add_endpoint("serve_molded", lambda inputs: model(inputs, training=False),
                         input_signature=_molded_signature(config))
    archive.write_out(path, verbose=False)
    log.info(f"SavedModel written to {path} (signatures serving_default, serve_molded)")
    return path


# ------------------------------------------------------------------------------ TFLite
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
                  "-0.0 before 0.0 (export_tflite traces with _plain_argmax instead)",
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

    tf = _tf()
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

    tf = _tf()
    path = os.fspath(path)
    # TFLite has no float64 kernels: the float32 resize (off by 1 in rare pixels, see
    # resize_bilinear_like_pillow) keeps the preprocessing builtin.
    serve = make_serving_function(model, config, paste_masks=paste_masks, exact=False)
    # Keras 3's path to TFLite goes through a SavedModel (converting the tf.function directly
    # reads Keras variables as uninitialised memory).
    with tempfile.TemporaryDirectory(prefix="mrcnn_kp_tflite_") as saved:
        archive = keras.export.ExportArchive()
        archive.track(model)
        with _portable_ops(tflite=True):
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


# ------------------------------------------------------------------------------ ONNX
ONNX_MISSING = ("ONNX export needs tf2onnx and onnx (and onnxruntime to run the result): "
                "pip install 'mrcnn_kp[onnx]' or pip install tf2onnx onnx onnxruntime")


def _plain_argmax(x, axis=None, keepdims=False):
    """keras.ops.argmax without its -0.0 handling (a Bitcast + BitwiseAnd on the float bits,
    which neither TFLite builtins nor tf2onnx can express); the same indices otherwise."""
    tf = _tf()
    x = tf.convert_to_tensor(x)
    flat = tf.reshape(x, [-1]) if axis is None else x
    index = tf.argmax(flat, axis=0 if axis is None else axis, output_type=tf.int32)
    if keepdims:
        index = tf.reshape(index, [1] * len(x.shape)) if axis is None else tf.expand_dims(
            index, axis)
    return index


@contextlib.contextmanager
def _portable_ops(tflite=False):
    """Trace the model with ops that TFLite builtins and ONNX can express:

    - keras.ops.argmax -> _plain_argmax (model/detection.py and ops/keypoints.py call it);
    - ops.backend.fused off: tf2onnx cannot convert the XLA-compiled functions
      (PartitionedCall with _XlaMustCompile) that it wraps ROIAlign's pooling in;
    - tflite=True: ops.backend.nms -> tflite_nms.tflite_nms, which feeds TFLite's NMS kernel
      inputs on which it selects what TensorFlow's does (see that module).
    All are restored on exit; they only change how the graph is written, not its results.
    """
    import keras

    from mrcnn_kp.inference.tflite_nms import tflite_nms
    from mrcnn_kp.ops import backend

    saved = backend.fused, keras.ops.argmax, backend.nms
    backend.fused = lambda fn: fn
    keras.ops.argmax = _plain_argmax
    if tflite:
        backend.nms = tflite_nms
    try:
        yield
    finally:
        backend.fused, keras.ops.argmax, backend.nms = saved


def onnx_available():
    try:
        import onnx  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError:
        return False
    return True


def export_onnx(model, config, path, paste_masks=False, opset=17):
    """Convert the serving function to ONNX with tf2onnx. Returns the path."""
    _tf()
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

    with atomic_path(path) as tmp, _portable_ops():
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


def export(model, config, path, format="saved_model", paste_masks=False):
    """Export in one of FORMATS; returns the path (TFLite: the TFLiteReport)."""
    if format == "saved_model":
        return export_saved_model(model, config, path, paste_masks=paste_masks)
    if format == "tflite":
        return export_tflite(model, config, path, paste_masks=paste_masks)
    if format == "onnx":
        return export_onnx(model, config, path, paste_masks=paste_masks)
    raise ValueError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
