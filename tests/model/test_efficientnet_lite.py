"""mrcnn_kp.model.efficientnet_lite: Lite0's parameter count, layer names and block table."""
import re

import keras
import numpy as np

from backbone_models import backbone_model

from mrcnn_kp.model.efficientnet_lite import lite0_block_specs


def test_lite0_parameter_count_and_layer_names():
    model = backbone_model("efficientnet_lite0")
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    # lukemelas' Lite0 file holds 4,652,008 parameters; its 1000-class _fc has 1,281,000.
    assert trainable == 4_652_008 - 1_281_000
    assert model.count_params() == 3_413_024  # + 42,016 BN moving statistics
    weighted = [layer.name for layer in model.layers if layer.weights]
    assert all(re.match(r"lite0_(stem|stage[2-5])_", name) for name in weighted), weighted
    assert not any(isinstance(layer, keras.layers.GlobalAveragePooling2D) for layer in model.layers)
    relu6 = [layer for layer in model.layers if isinstance(layer, keras.layers.ReLU)]
    assert len(relu6) == 1 + 31 + 1 and {layer.max_value for layer in relu6} == {6.0}
    assert not any(layer.bias is not None for layer in model.layers
                   if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)))


def test_lite0_blocks_follow_the_efficientnet_b0_table():
    specs = lite0_block_specs()
    assert len(specs) == 16
    assert [s["out_channels"] for s in specs] == [16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112,
                                                  192, 192, 192, 192, 320]
    assert [s["kernel"] for s in specs] == [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]
    assert [i for i, s in enumerate(specs) if s["stride"] == 2] == [1, 3, 5, 11]
    assert [s["level"] for s in specs] == [1, 2, 2, 3, 3, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5]
    assert specs[0]["prefix"] == "lite0_stem_block0" and specs[10]["prefix"] == \
        "lite0_stage4_block10"
