"""The backbones built once per test session (ResNet-101 takes seconds), and what the backbone
tests compare them with."""
import keras
import numpy as np

from mrcnn_kp.config import TinyConfig
from mrcnn_kp.model.backbone import build_backbone_model

SIDE = 128  # TinyConfig.IMAGE_MAX_DIM
_MODELS = {}


def backbone_model(name):
    """Build each backbone once per test session (ResNet-101 takes seconds)."""
    if name not in _MODELS:
        _MODELS[name] = build_backbone_model(TinyConfig().copy(BACKBONE=name))
    return _MODELS[name]


def predict(model, images):
    """Outputs as numpy. On JAX one jit-compiled call is 4x faster than eager op-by-op dispatch
    (each op compiles on first use); on TensorFlow the eager call is the faster one."""
    if keras.backend.backend() == "jax":
        outputs = model.predict_on_batch(images)
    else:
        outputs = model(images)
    return [np.asarray(o) for o in outputs]


def weighted_layers(model):
    return {layer.name: [tuple(w.shape) for w in layer.weights]
            for layer in model.layers if layer.weights}


def matterport_resnet50_weights():
    """The ResNet-50 layers and weight shapes of docs/MATTERPORT.md, spelt out."""
    expected = {"conv1": [(7, 7, 3, 64), (64,)], "bn_conv1": [(64,)] * 4}
    cin = 64
    for stage, blocks, (f1, f2, f3) in ((2, "abc", (64, 64, 256)), (3, "abcd", (128, 128, 512)),
                                        (4, "abcdef", (256, 256, 1024)),
                                        (5, "abc", (512, 512, 2048))):
        for block in blocks:
            convs = {"2a": (1, 1, cin, f1), "2b": (3, 3, f1, f2), "2c": (1, 1, f2, f3)}
            if block == "a":
                convs["1"] = (1, 1, cin, f3)
            for branch, shape in convs.items():
                expected[f"res{stage}{block}_branch{branch}"] = [shape, (shape[-1],)]
                expected[f"bn{stage}{block}_branch{branch}"] = [(shape[-1],)] * 4
            cin = f3
    return expected
