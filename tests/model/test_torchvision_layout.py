"""mrcnn_kp.model.torchvision_layout: the region torchvision computes, zeroed beyond."""
import keras
import numpy as np

from mrcnn_kp.model.torchvision_layout import TorchvisionValidRegion


def test_torchvision_valid_region_zeroes_beyond_the_padded_image():
    """TorchvisionValidRegion: zero beyond the image's size padded to 32 (or the image itself
    with divisor 1), at the map's stride; the image is at the canvas' top-left corner."""
    from model_batches import image_meta

    from mrcnn_kp.config import TorchvisionKeypointConfig

    config = TorchvisionKeypointConfig(IMAGE_MAX_DIM=128, IMAGE_MIN_DIM=64,
                                       IMAGE_RESIZE_MAX_SIDE=128)
    meta = np.stack([image_meta(config, window=(0, 0, 100, 70)),
                     image_meta(config, window=(0, 0, 128, 128))])
    x = keras.Input((32, 32, 2))
    m = keras.Input(meta.shape[1:])
    model = keras.Model([x, m], [TorchvisionValidRegion(128)(x, m),
                                 TorchvisionValidRegion(128, 1)(x, m)])
    ones = np.ones((2, 32, 32, 2), np.float32)
    padded, exact = [np.asarray(o) for o in model.predict_on_batch([ones, meta])]
    assert padded[0, :, :24].min() == 1 and padded[0, :, 24:].max() == 0  # 96 / 4 columns
    assert padded[0].sum() == 32 * 24 * 2 and padded[1].min() == 1
    assert exact[0, :25, :18].min() == 1 and exact[0].sum() == 25 * 18 * 2  # ceil(100/4), 70/4
