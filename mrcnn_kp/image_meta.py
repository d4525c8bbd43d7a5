"""image_meta: the per-image facts the model needs beside the pixels, in matterport's layout.

float32 [12 + NUM_CLASSES]:

    [image_id, orig_h, orig_w, orig_c, molded_h, molded_w, molded_c,
     win_y1, win_x1, win_y2, win_x2, scale, active_class_ids x NUM_CLASSES]

The window is (y1, x1, y2, x2) of the resized image inside the canvas, in molded pixels. This
module is the only code that knows the offsets: the data pipeline and the predictor compose the
vector, the model's layers and the predictor parse it, and the config sizes the model's input
with image_meta_size.
"""
import numpy as np

_META_ID = 0
_META_ORIGINAL_SHAPE = slice(1, 4)
_META_IMAGE_SHAPE = slice(4, 7)
_META_WINDOW = slice(7, 11)
_META_SCALE = 11
_META_ACTIVE_CLASS_IDS = 12
# id, original shape (3), molded shape (3), window (4), scale: the values before the class ids.
META_FIXED_SIZE = _META_ACTIVE_CLASS_IDS


def image_meta_size(num_classes):
    """Length of one image's image_meta for a model of num_classes classes (background too)."""
    return META_FIXED_SIZE + int(num_classes)


def compose_image_meta(image_id, original_image_shape, image_shape, window, scale,
                       active_class_ids):
    """float32 [12 + NUM_CLASSES]: matterport's layout (the module docstring)."""
    meta = np.concatenate([
        [image_id],
        list(original_image_shape),  # orig (h, w, c)
        list(image_shape),  # molded (h, w, c)
        list(window),  # (y1, x1, y2, x2) of the image inside the canvas, molded pixels
        [scale],
        list(active_class_ids),  # [NUM_CLASSES]
    ]).astype(np.float32)
    if meta.shape[0] < META_FIXED_SIZE + 1:
        raise ValueError(f"image_meta needs 3 + 3 + 4 values and active_class_ids, got "
                         f"{meta.shape[0]} numbers")
    return meta


def parse_image_meta(meta):
    """Split image_meta [..., 12 + NUM_CLASSES] into its parts (numpy arrays or tensors).

    Plain slicing, so it works on numpy arrays and on keras tensors of either backend.
    Returns a dict: image_id [...], original_image_shape [..., 3], image_shape [..., 3],
    window [..., 4] (y1, x1, y2, x2), scale [...], active_class_ids [..., NUM_CLASSES].
    """
    return {
        "image_id": meta[..., _META_ID],
        "original_image_shape": meta[..., _META_ORIGINAL_SHAPE],
        "image_shape": meta[..., _META_IMAGE_SHAPE],
        "window": meta[..., _META_WINDOW],
        "scale": meta[..., _META_SCALE],
        "active_class_ids": meta[..., _META_ACTIVE_CLASS_IDS:],
    }
