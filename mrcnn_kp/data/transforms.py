"""Geometry shared by the pipeline and the predictor: resize/pad, flip, scale jitter.

Every transform is one similarity `molded = original * scale + offset`, where offset is
`(left, top)` of the resized image inside the canvas (config.IMAGE_SHAPE[:2]: IMAGE_MAX_DIM
square, or IMAGE_CANVAS_SHAPE (height, width); `canvas` arguments take an int side or a
(height, width) pair). matterport writes the offset as
`padding = [(top, bottom), (left, right), (0, 0)]`; the helpers here take that same `padding`
(a negative top/left means the resized image was cropped, which only scale jitter does). Boxes are (x1, y1, x2, y2) and keypoints (x, y, v) in continuous pixel
coordinates (docs/DESIGN.md), so a horizontal flip maps x to W - x.

Images stay uint8 here; the pipeline casts once when it assembles a batch.
"""
import math

import numpy as np
from PIL import Image

from mrcnn_kp import constants


# ------------------------------------------------------------------ scale and placement
def canvas_hw(canvas):
    """(height, width) of a canvas given as an int side or a (height, width[, channels])."""
    if isinstance(canvas, (int, np.integer)):
        return int(canvas), int(canvas)
    return int(canvas[0]), int(canvas[1])


def config_canvas(config):
    """(height, width) of the config's molded canvas (IMAGE_SHAPE)."""
    return canvas_hw(config.IMAGE_SHAPE)


def _fit_canvas(height, width, scale, config):
    """scale, lowered where needed so the resized image (rounded) fits the canvas."""
    canvas_h, canvas_w = config_canvas(config)
    if round(height * scale) > canvas_h or round(width * scale) > canvas_w:
        scale = min(canvas_h / height, canvas_w / width)
    return float(scale)


def compute_scale(height, width, config):
    """matterport's "square" scale: upscale so the short side reaches IMAGE_MIN_DIM, at least
    IMAGE_MIN_SCALE, then cap so that the long side (rounded) fits IMAGE_MAX_DIM.

    IMAGE_RESIZE_MODE "torchvision" (GeneralizedRCNNTransform): up or down to
    min(IMAGE_MIN_DIM / short side, IMAGE_RESIZE_MAX_SIDE / long side) (0 means IMAGE_MAX_DIM).
    Either way the image must then fit the canvas: a non-square IMAGE_CANVAS_SHAPE caps the
    scale at min(canvas height / height, canvas width / width) too.
    """
    min_dim, max_dim = config.IMAGE_MIN_DIM, config.IMAGE_MAX_DIM
    if getattr(config, "IMAGE_RESIZE_MODE", "square") == "torchvision":
        max_side = getattr(config, "IMAGE_RESIZE_MAX_SIDE", 0) or max_dim
        scale = min(min_dim / min(height, width), max_side / max(height, width))
        if round(max(height, width) * scale) > max_dim:
            scale = max_dim / max(height, width)
        return _fit_canvas(height, width, scale, config)
    scale = 1.0
    if min_dim:
        scale = max(1.0, min_dim / min(height, width))
    if config.IMAGE_MIN_SCALE and scale < config.IMAGE_MIN_SCALE:
        scale = float(config.IMAGE_MIN_SCALE)
    if max_dim and round(max(height, width) * scale) > max_dim:
        scale = max_dim / max(height, width)
    return _fit_canvas(height, width, scale, config)


def top_left_padding(resized_height, resized_width, canvas):
    """torchvision's batch padding: the image at the top-left corner, padded bottom / right."""
    canvas_h, canvas_w = canvas_hw(canvas)
    return [(0, canvas_h - resized_height), (0, canvas_w - resized_width), (0, 0)]


def centred_padding(resized_height, resized_width, canvas):
    """matterport's zero padding of a resized image to the canvas, centred."""
    canvas_h, canvas_w = canvas_hw(canvas)
    top = (canvas_h - resized_height) // 2
    left = (canvas_w - resized_width) // 2
    return [(top, canvas_h - resized_height - top), (left, canvas_w - resized_width - left),
            (0, 0)]


def jitter_padding(resized_height, resized_width, canvas, rng):
    """Padding (or cropping, as negative padding) for a scale-jittered image.

    A side that fits is centred, as matterport does; a side that is too long is cropped at a
    random offset drawn from rng, so every part of a large image can be seen.
    """
    offsets = []
    for size, side in zip((resized_height, resized_width), canvas_hw(canvas)):
        if size <= side:
            start = (side - size) // 2
        else:
            start = -int(rng.integers(0, size - side + 1))
        offsets.append((start, side - size - start))
    return [offsets[0], offsets[1], (0, 0)]


def window_from_padding(resized_height, resized_width, padding, canvas):
    """(y1, x1, y2, x2) of the image content inside the canvas."""
    canvas_h, canvas_w = canvas_hw(canvas)
    top, left = padding[0][0], padding[1][0]
    return (max(top, 0), max(left, 0), min(top + resized_height, canvas_h),
            min(left + resized_width, canvas_w))


def _resize_uint8(image, height, width, method):
    """Bilinear resize of a uint8 [H, W, C] image to [height, width, C]."""
    if image.shape[0] == height and image.shape[1] == width:
        return image
    if method == "matterport":
        import skimage.transform

        out = skimage.transform.resize(image, (height, width), order=1, mode="constant", cval=0,
                                       clip=True, preserve_range=True, anti_aliasing=False)
        return out.astype(np.uint8)
    if method != "pil":
        raise ValueError(f"unknown resize method {method!r}; use 'pil' or 'matterport'")
    size = (width, height)  # Pillow wants (width, height)
    if image.shape[2] in (3, 4):
        return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(size,
                                                                              Image.BILINEAR))
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c])).resize(
        size, Image.BILINEAR)) for c in range(image.shape[2])]
    return np.stack(planes, axis=-1)


def place_image(image, scale, padding, canvas, method="pil"):
    """Resize uint8 [H, W, C] by scale and put it into a zero canvas at padding.

    Returns uint8 [canvas_h, canvas_w, C]. Negative padding crops (scale jitter).
    """
    height, width = image.shape[:2]
    new_h, new_w = int(round(height * scale)), int(round(width * scale))
    resized = _resize_uint8(image, new_h, new_w, method)  # [new_h, new_w, C]
    out = np.zeros(canvas_hw(canvas) + (image.shape[2],), dtype=np.uint8)
    top, left = padding[0][0], padding[1][0]
    y1, x1, y2, x2 = window_from_padding(new_h, new_w, padding, canvas)
    out[y1:y2, x1:x2] = resized[y1 - top:y2 - top, x1 - left:x2 - left]
    return out


def resize_image(image, config, method="pil"):
    """matterport's "square" mode (or torchvision's: see compute_scale and
    _resize_image_torchvision, float32 out): returns (image, window, scale, padding).

    image: uint8 [H, W, 3] -> uint8 [canvas_h, canvas_w, 3] (IMAGE_SHAPE; bilinear, zero
    padding, centred); window (y1, x1, y2, x2) of the image in the canvas; scale (float); padding
    [(top, bottom), (left, right), (0, 0)].
    method "pil" (default) is Pillow's bilinear, 20-30x faster than skimage; "matterport"
    reproduces matterport's skimage resize bit for bit (it darkens the border pixel and does
    not anti-alias when shrinking).
    """
    height, width = image.shape[:2]
    canvas = config_canvas(config)
    scale = compute_scale(height, width, config)
    if getattr(config, "IMAGE_RESIZE_MODE", "square") == "torchvision":
        return _resize_image_torchvision(image, scale, canvas, config.MEAN_PIXEL)
    new_h, new_w = int(round(height * scale)), int(round(width * scale))
    padding = centred_padding(new_h, new_w, canvas)
    window = window_from_padding(new_h, new_w, padding, canvas)
    return place_image(image, scale, padding, canvas, method), window, scale, padding


def torchvision_resized_size(height, width, scale):
    """torchvision's (interpolate's) size of an image resized by scale: floor, not round."""
    return int(math.floor(float(height) * scale)), int(math.floor(float(width) * scale))


def _bilinear_taps(in_size, out_size):
    """torch's bilinear (align_corners=False, no antialias) along one axis: source index
    pairs and weights of each output pixel."""
    source = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    frac = (source - low).astype(np.float32)[:, None]
    return low, high, 1.0 - frac, frac


def resize_bilinear_float(image, height, width):
    """[H, W, C] -> float32 [height, width, C], torch.nn.functional.interpolate(bilinear,
    align_corners=False) as torchvision's transform resizes (no rounding to uint8)."""
    image = np.asarray(image, np.float32)
    if image.shape[:2] == (height, width):
        return image.copy()
    low, high, w_low, w_high = _bilinear_taps(image.shape[0], height)
    rows = image[low] * w_low[..., None] + image[high] * w_high[..., None]  # [height, W, C]
    low, high, w_low, w_high = _bilinear_taps(image.shape[1], width)
    return rows[:, low] * w_low[None] + rows[:, high] * w_high[None]


def _resize_image_torchvision(image, scale, canvas, fill):
    """IMAGE_RESIZE_MODE "torchvision": float bilinear to the floored size, top-left, padded
    with the mean pixel (0 after normalisation; the model zeroes it anyway) -> float32."""
    new_h, new_w = torchvision_resized_size(image.shape[0], image.shape[1], scale)
    out = np.empty(canvas_hw(canvas) + (image.shape[2],), np.float32)
    out[...] = np.asarray(fill, np.float32)
    out[:new_h, :new_w] = resize_bilinear_float(image, new_h, new_w)
    padding = top_left_padding(new_h, new_w, canvas)
    return out, (0, 0, new_h, new_w), scale, padding


def torchvision_unmold_scale(window, original_shape):
    """torchvision's per-axis ratios (resized / original) (y, x), for unmold_boxes and
    unmold_keypoints under IMAGE_RESIZE_MODE "torchvision"."""
    return ((window[2] - window[0]) / float(original_shape[0]),
            (window[3] - window[1]) / float(original_shape[1]))


# ------------------------------------------------------------------ boxes, keypoints, masks
def _offset(padding):
    top, left = padding[0][0], padding[1][0]
    return np.array([left, top], dtype=np.float32)  # (x, y)


def resize_boxes(boxes, scale, padding, window=None):
    """Original-pixel boxes [N, 4] (x1, y1, x2, y2) -> molded pixels, clipped to window.

    window (y1, x1, y2, x2) is resize_image's; None skips the clipping.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    left, top = _offset(padding)
    out = boxes * np.float32(scale) + np.array([left, top, left, top], dtype=np.float32)
    if window is not None:
        wy1, wx1, wy2, wx2 = window
        out[:, 0::2] = np.clip(out[:, 0::2], wx1, wx2)
        out[:, 1::2] = np.clip(out[:, 1::2], wy1, wy2)
    return out


def resize_keypoints(keypoints, scale, padding, window=None):
    """Original-pixel keypoints [N, K, 3] (x, y, v) -> molded pixels.

    A joint with v = 0, or one that lands outside window (y1, x1, y2, x2), becomes (0, 0, 0):
    the contract's "a joint pushed outside the image by a transform gets v = 0".
    """
    keypoints = np.asarray(keypoints, dtype=np.float32)
    out = keypoints.copy()
    out[..., :2] = keypoints[..., :2] * np.float32(scale) + _offset(padding)
    labelled = keypoints[..., 2] > 0  # [N, K]
    if window is not None:
        wy1, wx1, wy2, wx2 = window
        x, y = out[..., 0], out[..., 1]
        labelled &= (x >= wx1) & (x <= wx2) & (y >= wy1) & (y <= wy2)
    out[~labelled] = 0.0
    return out


def resize_masks(masks, scale, padding, canvas):
    """Full masks bool [H, W, N] -> bool [canvas_h, canvas_w, N] with the image's scale and
    padding."""
    height, width, count = masks.shape
    out = np.zeros(canvas_hw(canvas) + (count,), dtype=bool)
    for i in range(count):
        placed = place_image(masks[:, :, i:i + 1].astype(np.uint8) * 255, scale, padding,
                             canvas)
        out[:, :, i] = placed[:, :, 0] >= 128
    return out


def flip_horizontal(image, boxes=None, masks=None, keypoints=None):
    """Mirror an image and its annotations left-right, in original pixels.

    image [H, W, C]; boxes [N, 4] (x1, y1, x2, y2) -> (W - x2, y1, W - x1, y2); masks
    [H, W, N]; keypoints [N, K, 3]: x -> W - x for labelled joints, then left and right joints
    swap (constants.FLIP_INDEX), so the flipped left wrist is the original right wrist
    mirrored. Returns (image, boxes, masks, keypoints), views where possible; None stays None.
    """
    width = image.shape[1]
    image = image[:, ::-1]
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        boxes = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]],
                         axis=1)
    if masks is not None:
        masks = masks[:, ::-1]
    if keypoints is not None:
        keypoints = np.asarray(keypoints, dtype=np.float32).copy()
        labelled = keypoints[..., 2] > 0
        keypoints[..., 0] = np.where(labelled, width - keypoints[..., 0], 0.0)
        if keypoints.shape[-2] == constants.NUM_KEYPOINTS:
            keypoints = keypoints[..., constants.FLIP_INDEX, :]
    return image, boxes, masks, keypoints


def random_scale_factor(config, rng):
    """Scale-jitter factor, log-uniform in config.AUGMENT_SCALE_RANGE; 1.0 when disabled."""
    low, high = (float(v) for v in config.AUGMENT_SCALE_RANGE)
    if low == high:
        return low
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


# ------------------------------------------------------------------ back to original pixels
def unmold_boxes(boxes, window, scale, original_shape=None):
    """Molded-pixel boxes [..., 4] (x1, y1, x2, y2) -> original-image pixels.

    window (y1, x1, y2, x2) and scale come from image_meta (mrcnn_kp.image_meta), or scale is a
    (y, x) pair (torchvision_unmold_scale); original_shape
    (h, w, ...) clips the result to the image. Inverse of resize_image + resize_boxes.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    wy1, wx1 = float(window[0]), float(window[1])
    sy, sx = _axis_scales(scale)
    out = (boxes - np.array([wx1, wy1, wx1, wy1], dtype=np.float32)) / \
        np.array([sx, sy, sx, sy], dtype=np.float32)
    if original_shape is not None:
        height, width = float(original_shape[0]), float(original_shape[1])
        out[..., 0::2] = np.clip(out[..., 0::2], 0.0, width)
        out[..., 1::2] = np.clip(out[..., 1::2], 0.0, height)
    return out


def unmold_keypoints(keypoints, window, scale):
    """Molded-pixel keypoints [..., K, 3] (x, y, score or v) -> original pixels; the third
    column is returned unchanged."""
    keypoints = np.asarray(keypoints, dtype=np.float32)
    out = keypoints.copy()
    wy1, wx1 = float(window[0]), float(window[1])
    sy, sx = _axis_scales(scale)
    out[..., 0] = (keypoints[..., 0] - wx1) / np.float32(sx)
    out[..., 1] = (keypoints[..., 1] - wy1) / np.float32(sy)
    return out


def _axis_scales(scale):
    """A scale, or (y, x) scales (torchvision_unmold_scale) -> (y, x)."""
    if np.ndim(scale) == 0:
        return float(scale), float(scale)
    sy, sx = scale
    return float(sy), float(sx)
