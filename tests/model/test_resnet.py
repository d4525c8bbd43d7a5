"""mrcnn_kp.model.resnet: matterport's ResNet-50/101 names, shapes, strides and parameter counts,
and the LAYOUT "torchvision" ResNet v1.5."""
import re
import types

import keras
import numpy as np
import pytest

from backbone_models import (SIDE, backbone_model, matterport_resnet50_weights, predict,
                             weighted_layers)

from mrcnn_kp.config import TinyConfig
from mrcnn_kp.model.backbone import backbone_tap_names, build_backbone_model
from mrcnn_kp.model.common_layers import FrozenableBatchNorm
from mrcnn_kp.model.resnet import resnet_bn_epsilon


def test_resnet50_names_and_shapes_equal_matterport():
    found = weighted_layers(backbone_model("resnet50"))
    expected = matterport_resnet50_weights()
    assert sum(name.startswith(("res", "conv")) for name in expected) == 53
    assert sum(name.startswith("bn") for name in expected) == 53
    assert found == expected
    assert found["res4f_branch2c"][0] == (1, 1, 256, 1024)
    # Stride 2 on the 1x1 branch2a and branch1 of 3a/4a/5a, never on the 3x3.
    model = backbone_model("resnet50")
    strided = sorted(layer.name for layer in model.layers
                     if isinstance(layer, keras.layers.Conv2D) and layer.strides == (2, 2))
    assert strided == ["conv1", "res3a_branch1", "res3a_branch2a", "res4a_branch1",
                       "res4a_branch2a", "res5a_branch1", "res5a_branch2a"]
    bn_layers = [layer for layer in model.layers if isinstance(layer, FrozenableBatchNorm)]
    assert {layer.epsilon for layer in bn_layers} == {1e-3}


def test_resnet50_parameter_count():
    # keras.applications.ResNet50(include_top=False): 23,587,712 (compared in the next test).
    assert backbone_model("resnet50").count_params() == 23_587_712  # incl. BN moving statistics


@pytest.mark.tf_only  # not TF-specific, but on JAX keras.applications' initialisers compile an
def test_resnet50_parameter_count_equals_keras_applications():  # RNG program per shape (50 s)
    reference = keras.applications.ResNet50(weights=None, include_top=False,
                                            input_shape=(SIDE, SIDE, 3))
    assert backbone_model("resnet50").count_params() == reference.count_params()


def test_resnet101_stage4_has_23_blocks_named_like_matterport():
    model = backbone_model("resnet101")
    stage4 = sorted({m.group(1) for layer in model.layers
                     if (m := re.fullmatch(r"res4([a-z])_branch2a", layer.name))})
    assert stage4 == [chr(c) for c in range(ord("a"), ord("w") + 1)]  # a + chr(98 + 0..21)
    assert backbone_tap_names(TinyConfig().copy(BACKBONE="resnet101"))[2] == "res4w_out"
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 104
    # keras.applications.ResNet101(include_top=False) has the same 42,658,176 parameters.
    assert model.count_params() == 42_658_176


def test_torchvision_layout_resnet_is_v1_5_without_biases():
    """LAYOUT "torchvision": stride on the 3x3 (padded 1 on both sides, then valid), no conv
    bias, batch-norm eps 1e-5, max-pool padded 1 on both sides; same names and tap shapes."""
    from mrcnn_kp.config import TorchvisionKeypointConfig

    config = TorchvisionKeypointConfig(IMAGE_MAX_DIM=64, IMAGE_MIN_DIM=64,
                                       IMAGE_RESIZE_MAX_SIDE=64)
    model = build_backbone_model(config)
    shapes = weighted_layers(model)
    assert shapes["conv1"] == [(7, 7, 3, 64)]  # no bias
    assert shapes["res3a_branch2b"] == [(3, 3, 128, 128)]
    assert model.get_layer("res3a_branch2a").strides == (1, 1)
    assert model.get_layer("res3a_branch2b").strides == (2, 2)
    assert model.get_layer("res3a_branch2b").padding == "valid"
    assert model.get_layer("res3a_branch2b_pad").padding == ((1, 1), (1, 1))
    assert model.get_layer("res3a_branch1").strides == (2, 2)
    assert model.get_layer("pool1_pad").padding == ((1, 1), (1, 1))
    assert model.get_layer("bn_conv1").epsilon == 1e-5
    assert resnet_bn_epsilon(config.copy(BACKBONE_BN_EPSILON=0.0)) == 0.0  # COCO_V1's
    assert resnet_bn_epsilon(types.SimpleNamespace(LAYOUT="matterport")) == 1e-3
    expected = matterport_resnet50_weights()
    assert set(shapes) == set(expected)
    assert all(shapes[name] == expected[name][:1] for name in shapes if name.startswith("res"))
    images = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype("float32")
    assert [f.shape[1] for f in predict(model, images)] == [16, 8, 4, 2]
