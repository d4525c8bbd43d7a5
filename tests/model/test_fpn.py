"""FPN: level shapes, P6 = P5[::2, ::2], matterport names and kernel shapes."""
import keras
import numpy as np

from mrcnn_kp.config import Config, TinyConfig
from mrcnn_kp.model.fpn import build_fpn

RESNET_CHANNELS = (256, 512, 1024, 2048)


def fpn_model(config, channels, side):
    inputs = [keras.Input((side // s, side // s, c)) for s, c in zip((4, 8, 16, 32), channels)]
    return keras.Model(inputs, build_fpn(inputs, config))


def test_pyramid_shapes_and_p6_is_p5_subsampled():
    config = TinyConfig()
    model = fpn_model(config, (24, 40, 112, 1280), 128)
    rng = np.random.default_rng(0)
    features = [rng.normal(size=(1,) + tuple(t.shape[1:])).astype("float32") for t in model.inputs]
    p2, p3, p4, p5, p6 = [np.asarray(p) for p in model(features)]
    assert [p.shape for p in (p2, p3, p4, p5, p6)] == [
        (1, 32, 32, 32), (1, 16, 16, 32), (1, 8, 8, 32), (1, 4, 4, 32), (1, 2, 2, 32)]
    np.testing.assert_array_equal(p6, p5[:, ::2, ::2])


def test_matterport_layer_names_and_kernel_shapes():
    model = fpn_model(Config(), RESNET_CHANNELS, 256)
    kernels = {layer.name: tuple(layer.kernel.shape) for layer in model.layers
               if hasattr(layer, "kernel")}
    assert kernels == {
        "fpn_c5p5": (1, 1, 2048, 256), "fpn_c4p4": (1, 1, 1024, 256),
        "fpn_c3p3": (1, 1, 512, 256), "fpn_c2p2": (1, 1, 256, 256),
        "fpn_p2": (3, 3, 256, 256), "fpn_p3": (3, 3, 256, 256),
        "fpn_p4": (3, 3, 256, 256), "fpn_p5": (3, 3, 256, 256)}
    assert all(model.get_layer(name).bias is not None for name in kernels)
    assert model.get_layer("fpn_p6").name == "fpn_p6"
