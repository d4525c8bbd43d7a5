"""Config.validate: the table of rules in mrcnn_kp.config.validation, its messages and order."""
import pytest

from mrcnn_kp.config import (PRESETS, Config, ConfigError, MatterportConfig, TinyConfig,
                             TorchvisionKeypointConfig)
from mrcnn_kp.config.validation import (FRACTIONS, POSITIVE_INTEGERS, RULES, Rule, attribute,
                                        first_problem)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"IMAGE_MAX_DIM": 500}, "IMAGE_MAX_DIM must be divisible by 64"),
        ({"ROI_POSITIVE_RATIO": 1.5}, "ROI_POSITIVE_RATIO must be between 0 and 1"),
        ({"ROI_POSITIVE_RATIO": 0.0}, "ROI_POSITIVE_RATIO must be in (0, 1]"),
        ({"BACKBONE": "vgg16"}, "unknown BACKBONE 'vgg16'"),
        ({"BACKBONE_BN_EPSILON": -1e-5}, "BACKBONE_BN_EPSILON must be None or a number"),
        ({"BACKBONE_BN_EPSILON": "0"}, "BACKBONE_BN_EPSILON must be None or a number"),
        ({"KEYPOINT_HEAD": "hrnet"}, "unknown KEYPOINT_HEAD 'hrnet'"),
        ({"KEYPOINT_MASK_SHAPE": 55}, "KEYPOINT_MASK_SHAPE must be even"),
        ({"KEYPOINT_MASK_SHAPE": 48}, "must be 4 x KEYPOINT_POOL_SIZE"),
        ({"NUM_CLASSES": 1}, "NUM_CLASSES counts the background"),
        ({"IMAGES_PER_GPU": 0}, "IMAGES_PER_GPU must be a positive integer"),
        ({"IMAGE_MIN_DIM": 2048}, "IMAGE_MIN_DIM (2048) cannot exceed IMAGE_MAX_DIM"),
        ({"LOSS_WEIGHTS": {"rpn_class_loss": 1.0}}, "LOSS_WEIGHTS must have exactly the keys"),
        ({"RPN_ANCHOR_SCALES": (32, 64)}, "RPN_ANCHOR_SCALES needs one scale per pyramid level"),
        ({"BBOX_STD_DEV": (0.1, 0.1, 0.2)}, "BBOX_STD_DEV must hold 4 finite numbers"),
        ({"LR_SCHEDULE": "poly"}, "unknown LR_SCHEDULE 'poly'"),
        ({"DETECTION_MAX_INSTANCES": 5000}, "DETECTION_MAX_INSTANCES (5000) cannot exceed"),
        ({"SEED": -1}, "SEED must be None or an integer in [0, 2**32), got -1"),
        ({"SEED": 2 ** 32}, "SEED must be None or an integer in [0, 2**32)"),
        ({"SEED": 1.5}, "SEED must be None or an integer in [0, 2**32), got 1.5"),
        ({"SEED": True}, "SEED must be None or an integer in [0, 2**32), got True"),
        ({"SEED": "7"}, "SEED must be None or an integer in [0, 2**32), got '7'"),
    ],
)
def test_validation_messages(overrides, message):
    with pytest.raises(ConfigError) as info:
        Config(**overrides)
    assert message in str(info.value)


@pytest.mark.parametrize("config, overrides, message", [
    # the whole text, class name first, for the rules that compare settings or compute a text
    (Config, {"IMAGE_MAX_DIM": 30},
     "Config: IMAGE_MAX_DIM must be divisible by 64 (the FPN downsamples 6 times), got 30; use "
     "64 or 64"),
    (TinyConfig, {"IMAGE_MAX_DIM": 1000},
     "TinyConfig: IMAGE_MAX_DIM must be divisible by 64 (the FPN downsamples 6 times), got "
     "1000; use 960 or 1024"),
    (Config, {"DETECTION_MODE": "matterport"},
     "Config: PROPOSAL_MODE ('pixels') and DETECTION_MODE ('matterport') must be the same: the "
     "ROIs pass between them in those coordinates"),
    (Config, {"PROPOSAL_MODE": "matterport", "DETECTION_MODE": "matterport"},
     "Config: PROPOSAL_MODE 'matterport' keeps matterport's normalised boxes, which only "
     "ROI_ALIGN_MODE 'crop_and_resize' pools; got 'roi_align'"),
    (MatterportConfig, {"PIXEL_STD": [2.0, 1.0, 1.0]},
     "MatterportConfig: IMAGE_NORMALIZATION 'matterport' subtracts MEAN_PIXEL only; PIXEL_STD "
     "must be all 1, got (2.0, 1.0, 1.0)"),
    (Config, {"IMAGE_CANVAS_SHAPE": [768, 768]},
     "Config: IMAGE_CANVAS_SHAPE must be () or (height, width), positive multiples of 64 whose "
     "larger is IMAGE_MAX_DIM (1024), got (768, 768)"),
    (Config, {"IMAGE_RESIZE_MAX_SIDE": 2000},
     "Config: IMAGE_RESIZE_MAX_SIDE must be between 0 and IMAGE_MAX_DIM (1024), got 2000"),
    (TorchvisionKeypointConfig, {"BACKBONE": "efficientnet_lite0"},
     "TorchvisionKeypointConfig: LAYOUT 'torchvision' needs a ResNet BACKBONE, got "
     "'efficientnet_lite0'"),
    (Config, {"KEYPOINT_POOL_SIZE": 13},
     "Config: KEYPOINT_MASK_SHAPE (56) must be 4 x KEYPOINT_POOL_SIZE (13): deconv x2 then "
     "upsample x2"),
    (Config, {"MASK_SHAPE": [14, 14]},
     "Config: MASK_SHAPE (14, 14) must be twice MASK_POOL_SIZE (14)"),
    (Config, {"RPN_POSITIVE_IOU": 0.2},
     "Config: RPN_NEGATIVE_IOU (0.3) cannot exceed RPN_POSITIVE_IOU (0.2)"),
    (Config, {"BACKBONE_STRIDES": (4, 8, 16, 32)},
     "Config: RPN_ANCHOR_SCALES needs one scale per pyramid level (4), got 5"),
    (Config, {"RPN_ANCHOR_RATIOS": [-1]}, "Config: RPN_ANCHOR_RATIOS must be positive, got (-1,)"),
    (Config, {"IMAGE_CHANNEL_COUNT": 1},
     "Config: MEAN_PIXEL must hold 1 finite numbers, got (123.7, 116.8, 103.9)"),
    (Config, {"RPN_BBOX_STD_DEV": [1, 1, 1, -1]},
     "Config: RPN_BBOX_STD_DEV must be positive, got (1, 1, 1, -1)"),
    (Config, {"PRE_NMS_LIMIT": 300},
     "Config: PRE_NMS_LIMIT (300) must be >= POST_NMS_ROIS_INFERENCE (1000)"),
    (TorchvisionKeypointConfig, {"PRE_NMS_LIMIT": 100},
     "TorchvisionKeypointConfig: PRE_NMS_LIMIT (100 per level) must be >= "
     "POST_NMS_ROIS_INFERENCE (1000)"),
    (Config, {"LOSS_WEIGHTS": {"keypoint_loss": 1.0, "rpn_class_loss": 1.0}},
     "Config: LOSS_WEIGHTS must have exactly the keys rpn_class_loss, rpn_bbox_loss, "
     "mrcnn_class_loss, mrcnn_bbox_loss, mrcnn_mask_loss, keypoint_loss; got keypoint_loss, "
     "rpn_class_loss"),
    (Config, {"WEIGHT_DECAY": -1},
     "Config: LEARNING_RATE must be > 0 and WEIGHT_DECAY >= 0, got 0.001, -1"),
    (Config, {"AUGMENT_SCALE_RANGE": [0.5, 0.4]},
     "Config: AUGMENT_SCALE_RANGE must be (min, max) with 0 < min <= max, got (0.5, 0.4)"),
])
def test_whole_messages(config, overrides, message):
    with pytest.raises(ConfigError) as info:
        config(**overrides)
    assert str(info.value) == message


def test_the_first_broken_rule_is_the_error():
    # the positive-integer rows come first, so later rules can do arithmetic on those values
    with pytest.raises(ConfigError, match="IMAGES_PER_GPU must be a positive integer"):
        Config(IMAGES_PER_GPU=0, BACKBONE="vgg16")
    with pytest.raises(ConfigError, match="NUM_CLASSES must be a positive integer, got 0"):
        Config(NUM_CLASSES=0)
    with pytest.raises(ConfigError, match="IMAGE_MIN_DIM \\(800\\) cannot exceed"):
        Config(IMAGE_MAX_DIM=64)


def test_every_rule_is_about_a_config_attribute():
    names = {rule.name for rule in RULES}
    assert set(POSITIVE_INTEGERS) | set(FRACTIONS) <= names
    assert all(name.isupper() and hasattr(Config, name) for name in names)
    assert all(callable(rule.check) for rule in RULES)


def test_every_preset_keeps_every_rule():
    for cls in PRESETS.values():
        assert first_problem(cls()) is None, cls.__name__


def test_a_new_rule_is_one_row():
    rules = RULES + (
        attribute("KEYPOINT_ROIS_PER_IMAGE", lambda value: value <= 8,
                  "{name} is at most 8 here, got {value} (canvas {IMAGE_MAX_DIM})"),
        Rule("MAX_GT_INSTANCES", lambda config: config.MAX_GT_INSTANCES <= config.BATCH_SIZE,
             lambda config: f"{config.MAX_GT_INSTANCES} > {config.BATCH_SIZE}"),
    )
    assert first_problem(TinyConfig(), rules) == "8 > 2"
    assert first_problem(TinyConfig(KEYPOINT_ROIS_PER_IMAGE=9), rules) == \
        "KEYPOINT_ROIS_PER_IMAGE is at most 8 here, got 9 (canvas 128)"
    assert first_problem(TinyConfig(MAX_GT_INSTANCES=2), rules) is None
