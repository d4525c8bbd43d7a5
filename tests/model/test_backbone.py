"""mrcnn_kp.model.backbone: taps C2..C5 at strides 4..32 for every backbone, stage regexes, the
refusal of an unknown backbone."""
import re
import types

import keras
import numpy as np
import pytest

from backbone_models import SIDE, backbone_model, predict

from mrcnn_kp.config import TinyConfig
from mrcnn_kp.model.backbone import (BACKBONE_TAP_STRIDES, backbone_channels, backbone_stage_regex,
                                     backbone_tap_names, build_backbone)


@pytest.mark.parametrize("name, channels", [
    ("resnet50", (256, 512, 1024, 2048)),
    ("resnet101", (256, 512, 1024, 2048)),
    ("efficientnet_lite0", (24, 40, 112, 1280)),
])
def test_taps_are_c2_to_c5_at_strides_4_to_32(name, channels):
    model = backbone_model(name)
    images = np.random.default_rng(0).normal(size=(2, SIDE, SIDE, 3)).astype("float32")
    features = predict(model, images)
    assert [f.shape for f in features] == [
        (2, SIDE // s, SIDE // s, c) for s, c in zip(BACKBONE_TAP_STRIDES, channels)]
    assert backbone_channels(TinyConfig().copy(BACKBONE=name)) == channels
    # The taps are the named layers of BACKBONE_STAGES (the FPN and weight files rely on them).
    taps = backbone_tap_names(TinyConfig().copy(BACKBONE=name))
    assert [tuple(model.get_layer(t).output.shape[1:]) for t in taps] == [
        tuple(f.shape[1:]) for f in features]
    assert all(np.isfinite(f).all() and f.std() > 0 for f in features)


def test_stage_regex_selects_stride_levels():
    resnet = TinyConfig().copy(BACKBONE="resnet50")

    def selected(model, config, stage):
        pattern = backbone_stage_regex(config, stage)
        return [layer.name for layer in model.layers
                if layer.weights and re.fullmatch(pattern, layer.name)]

    model = backbone_model("resnet50")
    counts = {stage: len(selected(model, resnet, stage)) for stage in ("5+", "4+", "3+", 2, 1)}
    # conv + BN per conv: stage 5 has 10 convs, stage 4 has 19, stage 3 has 13, stage 2 has 10.
    assert counts == {"5+": 20, "4+": 58, "3+": 84, 2: 104, 1: 106}
    assert re.fullmatch(backbone_stage_regex(resnet, "4+"), "bn4a_branch1")
    assert not re.fullmatch(backbone_stage_regex(resnet, "4+"), "res3d_branch2c")

    lite = TinyConfig()
    lite_model = backbone_model("efficientnet_lite0")
    five = selected(lite_model, lite, "5+")
    assert len(five) == 5 * 3 * 2 + 2  # blocks 11..15 (expand, dw, project, each + BN), head
    assert all(int(m.group(1)) >= 11 for name in five
               if (m := re.search(r"_block(\d+)_", name)))
    assert len(selected(lite_model, lite, 1)) == 98
    with pytest.raises(ValueError, match="stage must be 1..5"):
        backbone_stage_regex(lite, "6+")


def test_unknown_backbone_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown BACKBONE 'vgg16'"):
        build_backbone(keras.Input((64, 64, 3)), types.SimpleNamespace(BACKBONE="vgg16"))
