"""Predictor: images of any size in, people (boxes, masks, 17 joints) in original pixels out.

    predictor = Predictor(build_inference_model(config), config)
    results = predictor.detect([image])          # one dict per image, matterport-style
    r = results[0]
    r["rois"]       float32 [n, 4]      (x1, y1, x2, y2) in original-image pixels
    r["class_ids"]  int32   [n]         1 = person
    r["scores"]     float32 [n]
    r["masks"]      bool    [H, W, n]   full-image instance masks (matterport's layout)
    r["keypoints"]  float32 [n, 17, 3]  (x, y, score) in original-image pixels

Images are molded exactly as in training (mrcnn_kp.data.transforms: resize into the square,
zero padding), run in batches of config.BATCH_SIZE (the last batch padded, so the graph keeps
one static shape), and the model's molded-pixel outputs are mapped back with the window and
scale of each image: x_original = (x_molded - window_x1) / scale, clipped to the image.
Coordinates are continuous (a pixel's centre at i + 0.5), like the model's.

Masks: the model's 28x28 probability covers the detection box; it is resampled bilinearly at
the centre of every original pixel inside the box (cell centres at (j + 0.5) / 28 of the box,
values clamped at the border cells) and thresholded at 0.5.

With config.UNMOLD_MODE "matterport" (MatterportConfig) the results are matterport's
unmold_detections instead (`unmold_detections_matterport`): boxes normalised, shifted and
scaled by the normalised window and rounded to whole original pixels, zero-area boxes dropped,
and each 28x28 mask resized to its integer box with skimage and pasted (utils.unmold_mask);
config.IMAGE_RESIZE_METHOD "matterport" molds with matterport's skimage resize.
"""
import warnings
from pathlib import Path

import numpy as np

# Images with more pixels than this are refused by read_image (memory guard), see --max-pixels.
DEFAULT_MAX_PIXELS = 64_000_000
MASK_THRESHOLD = 0.5


class ImageReadError(ValueError):
    """A file that cannot be used as an image; the message says why."""


# ---------------------------------------------------------------------------- input images
def to_rgb_uint8(image):
    """Any image array -> uint8 RGB [H, W, 3].

    Grayscale [H, W] or [H, W, 1] is repeated, gray+alpha and RGBA lose their alpha, bool is
    0/255, floats in [0, 1] are scaled by 255 (other floats are taken as 0..255), uint16 is
    divided by 257; everything is clipped to 0..255.
    """
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"an image must be [H, W] or [H, W, C] with H, W > 0, got shape "
                         f"{array.shape}")
    channels = array.shape[2]
    if channels in (1, 2):
        array = np.repeat(array[:, :, :1], 3, axis=2)
    elif channels == 4:
        array = array[:, :, :3]
    elif channels != 3:
        raise ValueError(f"an image needs 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) "
                         f"channels, got {channels}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        array = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if array.size and array.max() <= 1.0:
            array = array * 255.0
        return np.clip(np.round(array), 0, 255).astype(np.uint8)
    if array.dtype == np.uint16:
        return np.round(array / 257.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return np.clip(array, 0, 255).astype(np.uint8)
    raise ValueError(f"unsupported image dtype {array.dtype}")


def read_image(path, max_pixels=DEFAULT_MAX_PIXELS):
    """Read an image file as uint8 RGB [H, W, 3], or raise ImageReadError saying why not.

    Pixels are used as stored (no EXIF rotation), like COCO's annotations, and converted as
    the data pipeline converts them (mrcnn_kp.data.dataset.to_rgb_uint8). Files over
    max_pixels are refused before their pixels are decoded.
    """
    from PIL import Image, UnidentifiedImageError

    from mrcnn_kp.data import dataset

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if max_pixels and width * height > max_pixels:
                    raise ImageReadError(
                        f"{path}: {width}x{height} ({width * height:,} pixels) is more than "
                        f"the limit of {max_pixels:,} pixels; downscale it or raise "
                        f"--max-pixels")
                img.load()
                array, _ = dataset.to_rgb_uint8(img)  # the data pipeline's conversion
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image (unrecognised file format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{path}: too many pixels ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: truncated or corrupt image ({exc})") from None
    return to_rgb_uint8(array)


# ---------------------------------------------------------------------------- un-molding
def paste_mask(mask_prob, box, image_shape, threshold=MASK_THRESHOLD):
    """A [m, m] probability over `box` (x1, y1, x2, y2 pixels) -> bool [H, W] full mask.

    Each pixel whose centre lies inside the box samples the probability bilinearly; the
    resampling is separable, so it is two small matrix products.
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    full = np.zeros((height, width), bool)
    prob = np.asarray(mask_prob, np.float64)
    x1, y1, x2, y2 = (float(v) for v in box)
    rows = _sampling_matrix(y1, y2, height, prob.shape[0])
    cols = _sampling_matrix(x1, x2, width, prob.shape[1])
    if rows is None or cols is None:
        return full
    (y0, wy), (x0, wx) = rows, cols
    full[y0:y0 + len(wy), x0:x0 + len(wx)] = wy @ prob @ wx.T >= threshold
    return full


def _sampling_matrix(start, end, limit, cells):
    """(first pixel, [pixels, cells] bilinear weights) for pixel centres in [start, end]."""
    if not end > start:
        return None
    first = max(int(np.floor(start)), 0)
    last = min(int(np.ceil(end)), limit)  # exclusive
    if last <= first:
        return None
    centres = np.arange(first, last) + 0.5
    u = (centres - start) / (end - start) * cells - 0.5  # in cell units, cell centres at j
    u = np.clip(u, 0.0, cells - 1.0)
    lo = np.floor(u).astype(int)
    hi = np.minimum(lo + 1, cells - 1)
    frac = u - lo
    weights = np.zeros((len(centres), cells))
    rows = np.arange(len(centres))
    np.add.at(weights, (rows, lo), 1.0 - frac)
    np.add.at(weights, (rows, hi), frac)
    weights[(centres < start) | (centres > end)] = 0.0
    return first, weights


def unmold_mask_matterport(mask_prob, box, image_shape, threshold=MASK_THRESHOLD):
    """matterport utils.unmold_mask: [m, m] probability, integer box (x1, y1, x2, y2) ->
    bool [H, W]: the mask resized to the box with skimage (bilinear, zero outside, no
    anti-aliasing), >= threshold, pasted into an empty image."""
    import skimage.transform

    x1, y1, x2, y2 = (int(v) for v in box)
    resized = skimage.transform.resize(
        np.asarray(mask_prob, np.float32), (y2 - y1, x2 - x1), order=1, mode="constant", cval=0,
        clip=True, preserve_range=False, anti_aliasing=False)
    full = np.zeros(tuple(int(v) for v in image_shape[:2]), bool)
    full[y1:y2, x1:x2] = resized >= threshold
    return full


def _kept_detections(outputs, keep, rois, mask_boxes, paste, window, scale, image_hw):
    """The result dict of the kept detection slots, in original pixels.

    keep [n] slot indices; rois [n, 4] their (x1, y1, x2, y2) boxes; mask_boxes [n, 4] the
    boxes each mask probability is pasted into with paste(prob, box, image_hw).
    """
    from mrcnn_kp.data import transforms

    height, width = image_hw
    result = {
        "rois": np.asarray(rois, np.float32),
        "class_ids": np.asarray(outputs["class_ids"]).astype(np.int32).reshape(-1)[keep],
        "scores": np.asarray(outputs["scores"], np.float32).reshape(-1)[keep],
    }
    if outputs.get("keypoints") is not None:
        keypoints = transforms.unmold_keypoints(np.asarray(outputs["keypoints"])[keep], window,
                                                scale)  # [n, K, 3]
        keypoints[..., 0] = np.clip(keypoints[..., 0], 0.0, width)
        keypoints[..., 1] = np.clip(keypoints[..., 1], 0.0, height)
        result["keypoints"] = keypoints.astype(np.float32)
    if outputs.get("masks") is not None:
        probs = np.asarray(outputs["masks"])[keep]  # [n, m, m]
        masks = np.zeros((height, width, len(keep)), bool)
        for i, (prob, box) in enumerate(zip(probs, mask_boxes)):
            masks[:, :, i] = paste(prob, box, image_hw)
        result["masks"] = masks
    return result


def unmold_detections_matterport(outputs, image_shape, window, molded_shape, scale):
    """matterport's unmold_detections for one image's model outputs -> a result dict.

    outputs: as unmold_detections (boxes [D, 4] pixel (x1, y1, x2, y2) of the molded image),
    plus normalized_boxes [D, 4] (matterport's (y1, x1, y2, x2), the model's output in the
    matterport modes), used when present. The detections end at the first class 0; boxes are
    normalised (matterport's norm_boxes),
    shifted and scaled by the normalised window, then `np.around(b * (h-1, w-1) + (0, 0, 1, 1))`
    in original pixels; boxes of area <= 0 are dropped. rois stay (x1, y1, x2, y2) (our
    contract; matterport's are (y1, x1, y2, x2)), float32 holding whole numbers. Keypoints
    (not in matterport) are unmolded as unmold_detections does, with `scale`.
    """
    from mrcnn_kp.ops import matterport as matterport_ops

    height, width = int(image_shape[0]), int(image_shape[1])
    class_ids = np.asarray(outputs["class_ids"]).astype(np.int32).reshape(-1)  # [D]
    zeros = np.flatnonzero(class_ids == 0)
    count = int(zeros[0]) if len(zeros) else len(class_ids)
    if outputs.get("normalized_boxes") is not None:  # the model's own (y1, x1, y2, x2)
        boxes = np.asarray(outputs["normalized_boxes"], np.float32)[:count]
    else:  # pixels back to normalised (within a float32 ulp)
        xyxy = np.asarray(outputs["boxes"], np.float32)[:count]
        mh, mw = float(molded_shape[0]), float(molded_shape[1])
        norm = np.array([mh - 1, mw - 1, mh - 1, mw - 1], np.float32)
        boxes = (xyxy[:, [1, 0, 3, 2]] - np.array([0, 0, 1, 1], np.float32)) / norm
    wy1, wx1, wy2, wx2 = matterport_ops.norm_boxes_numpy(window, molded_shape[:2])
    shift = np.array([wy1, wx1, wy1, wx1])
    wh, ww = wy2 - wy1, wx2 - wx1
    boxes = np.divide(boxes - shift, np.array([wh, ww, wh, ww]))
    boxes = matterport_ops.denorm_boxes_numpy(boxes, (height, width))  # int32 (y1, x1, y2, x2)
    keep = np.flatnonzero((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) > 0)
    boxes = boxes[keep][:, [1, 0, 3, 2]]  # (x1, y1, x2, y2)
    return _kept_detections(outputs, keep, boxes, boxes, unmold_mask_matterport, window, scale,
                            (height, width))


def unmold_detections(outputs, image_shape, window, scale):
    """One image's model outputs (molded pixels) -> a result dict in original pixels.

    outputs: boxes [D, 4], class_ids [D], scores [D], masks [D, m, m] (optional),
        keypoints [D, K, 3] (optional), num_detections (scalar), as numpy.
    window: (y1, x1, y2, x2) of the image inside the molded square; scale: the resize factor
        (or (y, x) factors: transforms.torchvision_unmold_scale).
    """
    from mrcnn_kp.data import transforms

    height, width = int(image_shape[0]), int(image_shape[1])
    class_ids = np.asarray(outputs["class_ids"]).astype(np.int32).reshape(-1)  # [D]
    count = int(np.asarray(outputs.get("num_detections", len(class_ids))))
    unclipped = transforms.unmold_boxes(outputs["boxes"], window, scale)  # [D, 4]
    boxes = transforms.unmold_boxes(outputs["boxes"], window, scale, image_shape)  # [D, 4]
    valid = (np.arange(len(class_ids)) < count) & (class_ids > 0)
    valid &= (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    keep = np.flatnonzero(valid)
    # The mask probability covers the box as predicted, before clipping to the image.
    return _kept_detections(outputs, keep, boxes[keep], unclipped[keep], paste_mask, window,
                            scale, (height, width))


# ---------------------------------------------------------------------------- predictor
class Predictor:
    """Runs an inference model (mrcnn_kp.model.keypoint_rcnn.build_inference_model) on images.

    inference_model: a keras.Model taking {input_image, input_image_meta} and returning the
        dict of docs/DESIGN.md (boxes, class_ids, scores, masks, keypoints,
        num_detections in molded pixels).
    """

    def __init__(self, inference_model, config):
        self.model = inference_model
        self.config = config

    # ------------------------------------------------------------------ public API
    def detect(self, images, verbose=0):
        """A list of images (or one [B, H, W, C] array) -> a list of result dicts, one each."""
        if isinstance(images, np.ndarray) and images.ndim in (2, 3):
            raise ValueError("detect() takes a list of images; wrap a single image as [image]")
        images = list(images)
        if verbose:
            print(f"Processing {len(images)} images")
        results = []
        size = self.config.BATCH_SIZE
        for start in range(0, len(images), size):
            results.extend(self._detect_batch(images[start:start + size], verbose))
        return results

    def predict_stream(self, items, batch_size=None, verbose=0):
        """Detect over an iterable lazily, batch by batch; yields (key, result) in order.

        items: images, or (key, image) pairs; a bare image's key is its position.
        batch_size: images per model call (default config.BATCH_SIZE).
        """
        size = int(batch_size or self.config.BATCH_SIZE)
        keys, images = [], []
        for position, item in enumerate(items):
            if isinstance(item, tuple) and len(item) == 2:
                key, image = item
            else:
                key, image = position, item
            keys.append(key)
            images.append(image)
            if len(images) == size:
                yield from zip(keys, self._detect_images(images, verbose))
                keys, images = [], []
        if images:
            yield from zip(keys, self._detect_images(images, verbose))

    def mold_inputs(self, images):
        """uint8 RGB images -> (molded [B, S, S, 3] float32, image_meta [B, M], windows, scales).

        Shorter lists are padded with blank images up to config.BATCH_SIZE.
        """
        from mrcnn_kp.data import transforms
        from mrcnn_kp.image_meta import compose_image_meta

        config = self.config
        molded, metas, windows, scales = [], [], [], []
        for image in images:
            resized, window, scale, _ = transforms.resize_image(
                image, config, method=getattr(config, "IMAGE_RESIZE_METHOD", "pil"))
            molded.append(resized.astype(np.float32))
            metas.append(compose_image_meta(
                0, image.shape, resized.shape, window, scale,
                np.zeros(config.NUM_CLASSES, np.int32)))
            windows.append(window)
            scales.append(scale)
        for _ in range(config.BATCH_SIZE - len(images)):
            molded.append(np.zeros_like(molded[0]))
            metas.append(metas[0])
        return np.stack(molded), np.stack(metas).astype(np.float32), windows, scales

    # ------------------------------------------------------------------ internals
    def _detect_images(self, images, verbose):
        size = self.config.BATCH_SIZE
        out = []
        for start in range(0, len(images), size):
            out.extend(self._detect_batch(images[start:start + size], verbose))
        return out

    def _detect_batch(self, images, verbose):
        images = [to_rgb_uint8(image) for image in images]
        molded, metas, windows, scales = self.mold_inputs(images)
        if verbose:
            for image in images:
                print(f"image {image.shape} -> molded {molded.shape[1:]}")
        outputs = self.model.predict_on_batch({"input_image": molded, "input_image_meta": metas})
        outputs = {name: np.asarray(value) for name, value in outputs.items()}
        results = []
        matterport = getattr(self.config, "UNMOLD_MODE", "continuous") == "matterport"
        for i, image in enumerate(images):
            one = {name: value[i] for name, value in outputs.items()}
            if matterport:
                results.append(unmold_detections_matterport(
                    one, image.shape, windows[i], self.config.IMAGE_SHAPE, scales[i]))
            elif getattr(self.config, "IMAGE_RESIZE_MODE", "square") == "torchvision":
                # torchvision's postprocess: a ratio per axis (its sizes are floored)
                from mrcnn_kp.data.transforms import torchvision_unmold_scale

                results.append(unmold_detections(
                    one, image.shape, windows[i],
                    torchvision_unmold_scale(windows[i], image.shape)))
            else:
                results.append(unmold_detections(one, image.shape, windows[i], scales[i]))
        return results


# ---------------------------------------------------------------------------- loading
def load_predictor(config, weights=None):
    """Build the inference model for `config`, load `weights` by layer name, wrap it.

    weights: a `.weights.h5` (ours), a legacy Keras-2 `.h5` (matterport), or None for random
    initial weights. config.MIXED_PRECISION (e.g. "mixed_bfloat16": bf16 convolutions on CPUs
    with AVX512_BF16 / AMX) sets Keras' global dtype policy first, as MaskRCNN does. Returns
    (Predictor, the weights loader's report or None); the report is also logged by
    mrcnn_kp.weights.
    """
    from mrcnn_kp.model.keypoint_rcnn import build_inference_model
    from mrcnn_kp.runtime import apply_mixed_precision

    apply_mixed_precision(config)
    model = build_inference_model(config)
    report = None
    if weights is not None:
        from mrcnn_kp.weights import load_weights

        if not Path(weights).is_file():
            raise FileNotFoundError(f"weights file not found: {weights}")
        report = load_weights(model, weights, by_name=True)
    return Predictor(model, config), report
