"""Backbones: image -> [C2, C3, C4, C5] feature maps at strides 4, 8, 16 and 32.

Three backbones, picked by `config.BACKBONE`, all built from plain Keras layers in functional
style, every layer top-level and named, so weight files load by layer name and the trainer selects
stages by a regex over names (`backbone_stage_regex`):

- "resnet50", "resnet101": matterport's `resnet_graph` layout and names, so `mask_rcnn_coco.h5`
  and its descendants load (`mrcnn_kp.model.resnet`); with `config.LAYOUT == "torchvision"`,
  torchvision's ResNet v1.5 under the same names (`mrcnn_kp.model.torchvision_layout` holds the
  masking that goes with it).
- "efficientnet_lite0": EfficientNet-B0 widths and depths without squeeze-excite, with ReLU6
  (`mrcnn_kp.model.efficientnet_lite`).

Shared layers (FrozenableBatchNorm, HostVarianceScaling) are in `mrcnn_kp.model.common_layers`.
Input normalisation is not done here: the model core normalises before calling the backbone.

Parameters: EfficientNet-Lite0 3,371,008 trainable (the ImageNet file's 4,652,008 less the
1,281,000 of its classifier `_fc`); ResNet-50 23,587,712 and ResNet-101 42,658,176 with BN
statistics, equal to keras.applications' include_top=False counts.
"""
import re

import keras

from mrcnn_kp.model.efficientnet_lite import build_efficientnet_lite0
from mrcnn_kp.model.resnet import build_resnet

# Per backbone: name prefixes of each stride level (1 = stride 2 incl. the stem ... 5 = stride 32),
# the layer names of the C2..C5 taps and their channel counts. Documentation and the source of
# `backbone_stage_regex`, `backbone_tap_names` and `backbone_channels`.
BACKBONE_STAGES = {
    "resnet50": {
        "level_prefixes": {1: ("conv1", "bn_conv1"), 2: ("res2", "bn2"), 3: ("res3", "bn3"),
                           4: ("res4", "bn4"), 5: ("res5", "bn5")},
        "taps": ("res2c_out", "res3d_out", "res4f_out", "res5c_out"),
        "channels": (256, 512, 1024, 2048),
    },
    "resnet101": {
        "level_prefixes": {1: ("conv1", "bn_conv1"), 2: ("res2", "bn2"), 3: ("res3", "bn3"),
                           4: ("res4", "bn4"), 5: ("res5", "bn5")},
        "taps": ("res2c_out", "res3d_out", "res4w_out", "res5c_out"),
        "channels": (256, 512, 1024, 2048),
    },
    "efficientnet_lite0": {
        "level_prefixes": {1: ("lite0_stem_",), 2: ("lite0_stage2_",), 3: ("lite0_stage3_",),
                           4: ("lite0_stage4_",), 5: ("lite0_stage5_",)},
        "taps": ("lite0_stage2_block2_out", "lite0_stage3_block4_out",
                 "lite0_stage4_block10_out", "lite0_stage5_head_relu"),
        "channels": (24, 40, 112, 1280),
    },
}
BACKBONE_TAP_STRIDES = (4, 8, 16, 32)


def build_backbone(image_tensor, config, valid=None):
    """[B, S, S, 3] normalised image -> [C2, C3, C4, C5] at strides 4, 8, 16, 32.

    valid: valid_region_fn's masking (LAYOUT "torchvision" ResNets), or None."""
    if config.BACKBONE == "resnet50":
        return build_resnet(image_tensor, config, 50, valid)
    if config.BACKBONE == "resnet101":
        return build_resnet(image_tensor, config, 101, valid)
    if config.BACKBONE == "efficientnet_lite0":
        return build_efficientnet_lite0(image_tensor, config)
    raise ValueError(f"unknown BACKBONE {config.BACKBONE!r}; choose one of "
                     f"{', '.join(BACKBONE_STAGES)}")


def build_backbone_model(config):
    """A keras.Model image -> [C2, C3, C4, C5], for inspection and benchmarks.

    Its input is the already normalised image (the detection model normalises before the backbone).
    """
    image = keras.Input(shape=config.IMAGE_SHAPE, name="input_image")
    features = build_backbone(image, config)
    return keras.Model(image, features, name=f"{config.BACKBONE}_backbone")


def backbone_channels(config):
    """Channels of C2..C5 for config.BACKBONE, e.g. (256, 512, 1024, 2048) for ResNet."""
    return _stages(config)["channels"]


def backbone_tap_names(config):
    """Layer names whose outputs are C2..C5."""
    return _stages(config)["taps"]


def backbone_stage_regex(config, stage):
    """Regex (for re.fullmatch) of the backbone layer names at stride level >= `stage`.

    `stage` is 1..5 or "1+".."5+" as in matterport's train(layers="4+"): 5 selects the stride-32
    stage, 4 the stride-16 and -32 stages, ..., 1 the whole backbone, stem included. The
    trainer ORs this with its head regex (`fpn_.*`, `rpn_.*`, `mrcnn_.*`).
    """
    level = _parse_stage(stage)
    prefixes = _stages(config)["level_prefixes"]
    names = [p for lv in range(level, 6) for p in prefixes[lv]]
    return "|".join(f"({re.escape(p)}.*)" for p in names)


def _parse_stage(stage):
    text = str(stage).strip()
    if text.endswith("+"):
        text = text[:-1]
    if not text.isdigit() or not 1 <= int(text) <= 5:
        raise ValueError(f"stage must be 1..5 or '1+'..'5+' (stride level 5 = stride 32), "
                         f"got {stage!r}")
    return int(text)


def _stages(config):
    backbone = config.BACKBONE if not isinstance(config, str) else config
    if backbone not in BACKBONE_STAGES:
        raise ValueError(f"unknown BACKBONE {backbone!r}; choose one of "
                         f"{', '.join(BACKBONE_STAGES)}")
    return BACKBONE_STAGES[backbone]
