"""LAYOUT "torchvision": the masking that makes our fixed square canvas compute what torchvision
computes on each image's own size.

torchvision runs each image on its resized size padded to a multiple of 32, with zero padding
beyond it; `TorchvisionValidRegion` zeroes a feature map outside that region before each layer
that looks at neighbours, so the numbers inside it are torchvision's. The ResNet's own
torchvision shape (v1.5, no conv biases, epsilon 1e-5) is in `mrcnn_kp.model.resnet`.
"""
import keras
from keras import ops


def is_torchvision_layout(config):
    """True when config.LAYOUT is "torchvision" (torchvision's ResNet shape and masking)."""
    return getattr(config, "LAYOUT", "matterport") == "torchvision"


def torchvision_extent(image_meta, divisor=32):
    """image_meta [B, 12 + C] -> [B, 2] float32 (height, width) canvas pixels of the region
    torchvision computes for each image: its resized size (image_meta's window, the image at
    the canvas' top-left) rounded up to a multiple of `divisor` (GeneralizedRCNNTransform's
    batch padding; 1: the image itself)."""
    from mrcnn_kp.image_meta import parse_image_meta

    window = ops.cast(parse_image_meta(image_meta)["window"], "float32")  # [B, 4] y1 x1 y2 x2
    extent = window[:, 2:4]  # [B, 2] (y2, x2)
    if divisor > 1:
        extent = ops.ceil(extent / divisor) * divisor
    return extent


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class TorchvisionValidRegion(keras.layers.Layer):
    """[x [B, H, W, C], image_meta] -> x, zero outside the region torchvision would compute.

    torchvision runs each image on its resized size padded to a multiple of `divisor` (32),
    with zero padding (of the normalised image, and of every conv) beyond it; our canvas is a
    fixed square. Zeroing a map outside that region before each layer that looks at
    neighbours (3x3 / 7x7 convs, the max-pool) gives the same numbers inside it, so a
    LAYOUT "torchvision" model equals torchvision on any single image. divisor=1 zeroes
    outside the image itself (the normalised input). The image sits at the canvas' top-left
    corner (IMAGE_RESIZE_MODE "torchvision"); its extent is image_meta's window (y2, x2).
    """

    def __init__(self, canvas, divisor=32, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.canvas = int(canvas)
        self.divisor = int(divisor)

    def call(self, x, image_meta):
        extent = torchvision_extent(image_meta, self.divisor)  # [B, 2] (y, x) canvas pixels
        height, width = int(x.shape[1]), int(x.shape[2])
        extent = extent * (height / self.canvas)  # in cells of this map
        rows = ops.cast(ops.arange(height), "float32")[None, :] < extent[:, 0:1]  # [B, H]
        cols = ops.cast(ops.arange(width), "float32")[None, :] < extent[:, 1:2]  # [B, W]
        mask = ops.logical_and(rows[:, :, None], cols[:, None, :])[..., None]  # [B, H, W, 1]
        return x * ops.cast(mask, x.dtype)

    def compute_output_shape(self, x_shape, image_meta_shape):
        return x_shape

    def get_config(self):
        config = super().get_config()
        config.update(canvas=self.canvas, divisor=self.divisor)
        return config


def valid_region_fn(config, image_meta):
    """valid(x, name) -> x masked by TorchvisionValidRegion (LAYOUT "torchvision" with an
    image_meta), else x unchanged."""
    if image_meta is None or not is_torchvision_layout(config):
        return lambda x, name, divisor=32: x

    def valid(x, name, divisor=32):
        return TorchvisionValidRegion(config.IMAGE_SHAPE[0], divisor, name=name)(x, image_meta)

    return valid
