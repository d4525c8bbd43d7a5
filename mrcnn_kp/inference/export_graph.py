"""The serving function every export wraps: in-graph molding, the model, in-graph un-molding.

Every format of inference.export serves this function as `serving_default`:

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
as `predictor.unmold_detections` does. molded_signature is the raw model's input
({input_image [B, S, S, 3] float32, input_image_meta [B, M]}, B = config.BATCH_SIZE, static),
for servers that batch and mold themselves. portable_ops traces the model with ops that
TFLite builtins and ONNX can express.

Everything here is TensorFlow (KERAS_BACKEND=tensorflow, the default); require_tensorflow
says so otherwise.
"""
import contextlib

MASK_THRESHOLD = 0.5
_PILLOW_PRECISION_BITS = 22  # Pillow's fixed-point weights for 8-bit images (32 - 8 - 2)


def require_tensorflow():
    """The tensorflow module; RuntimeError when Keras runs on another backend."""
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
    tf = require_tensorflow()
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
    tf = require_tensorflow()
    half, unit = float(1 << (_PILLOW_PRECISION_BITS - 1)), float(1 << _PILLOW_PRECISION_BITS)
    return tf.cast(tf.clip_by_value(tf.floor((sums + half) / unit), 0.0, 255.0), tf.uint8)


_SPLIT = 256.0  # weights = high * 256 + low: float32 sums of either part stay exact


def _split_sums_to_uint8(high, low):
    """Pillow's clip8((sum + 2**21) >> 22) from the sum as high * 256 + low (float32 holding
    integers below 2**24) in int32 arithmetic, which holds the sum exactly."""
    tf = require_tensorflow()
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
    tf = require_tensorflow()
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
    tf = require_tensorflow()
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
    tf = require_tensorflow()
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
    tf = require_tensorflow()
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
    tf = require_tensorflow()
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
    tf = require_tensorflow()
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
    tf = require_tensorflow()

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


def molded_signature(config):
    """BATCH_SIZE molded images: the batch is static because the pyramid ROIAlign lays the
    whole batch's feature maps out in one table (ops.pyramid_roi_align)."""
    tf = require_tensorflow()
    batch = config.BATCH_SIZE
    return [{
        "input_image": tf.TensorSpec([batch] + list(config.IMAGE_SHAPE), tf.float32,
                                     name="input_image"),
        "input_image_meta": tf.TensorSpec([batch, config.IMAGE_META_SIZE], tf.float32,
                                          name="input_image_meta"),
    }]


# ------------------------------------------------------------------------------ portable ops
def plain_argmax(x, axis=None, keepdims=False):
    """keras.ops.argmax without its -0.0 handling (a Bitcast + BitwiseAnd on the float bits,
    which neither TFLite builtins nor tf2onnx can express); the same indices otherwise."""
    tf = require_tensorflow()
    x = tf.convert_to_tensor(x)
    flat = tf.reshape(x, [-1]) if axis is None else x
    index = tf.argmax(flat, axis=0 if axis is None else axis, output_type=tf.int32)
    if keepdims:
        index = tf.reshape(index, [1] * len(x.shape)) if axis is None else tf.expand_dims(
            index, axis)
    return index


@contextlib.contextmanager
def portable_ops(tflite=False):
    """Trace the model with ops that TFLite builtins and ONNX can express:

    - keras.ops.argmax -> plain_argmax (model/detection.py and ops/keypoints.py call it);
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
    keras.ops.argmax = plain_argmax
    if tflite:
        backend.nms = tflite_nms
    try:
        yield
    finally:
        backend.fused, keras.ops.argmax, backend.nms = saved
