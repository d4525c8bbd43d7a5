"""The values each setting accepts, and the rules Config.validate checks, as one table.

RULES is read top to bottom and the first rule that fails is the error, so a rule may rely on
the rows above it (the range and cross-field rules below the positive-integer rows can do
arithmetic on those values). A row is `Rule(name, check, message)`:

- `name`: the attribute the rule is about;
- `check(config) -> bool`: True when the value is acceptable. `attribute(name, test, message)`
  builds a row whose test sees only the value; the rules that compare settings are the small
  named functions below, which see the whole config;
- `message`: a `str.format` template with `{name}`, `{value}` (the attribute's value) and any
  config attribute by name (`{IMAGE_MAX_DIM}`), or a function of the config for the few whose
  text is computed.

A new setting is one row (or a few, for a setting tied to others). Config.validate prefixes the
message with the config class' name and raises ConfigError.
"""
from typing import Callable, NamedTuple, Union

import numpy as np

BACKBONES = ("resnet50", "resnet101", "efficientnet_lite0")
KEYPOINT_HEADS = ("deconv4", "humanpose")
KEYPOINT_DECODERS = ("window", "exact")
# "matterport": matterport's ResNet (stride on the 1x1, biased convs, BN eps 1e-3), 2-way RPN
# softmax, BN box head. "torchvision": keypointrcnn_resnet50_fpn's (ResNet v1.5 without conv
# biases, frozen BN eps 1e-5, torch padding, 256-channel RPN with one sigmoid logit per anchor,
# rounded anchors, per-level proposals, TwoMLPHead box head); see TorchvisionKeypointConfig.
LAYOUTS = ("matterport", "torchvision")
RESIZE_MODES = ("square", "torchvision")
ROI_ALIGN_MODES = ("roi_align", "crop_and_resize")
# The matterport compatibility options (MatterportConfig): "matterport" reproduces its numbers.
BOX_MODES = ("pixels", "matterport")  # PROPOSAL_MODE, DETECTION_MODE
IMAGE_RESIZE_METHODS = ("pil", "matterport")
IMAGE_NORMALIZATIONS = ("float32", "matterport")
UNMOLD_MODES = ("continuous", "matterport")
LR_SCHEDULES = ("constant", "step", "cosine")
OPTIMIZERS = ("sgd", "adamw")
# The training model's six losses: its outputs, its metrics and the keys of LOSS_WEIGHTS.
LOSS_NAMES = (
    "rpn_class_loss",
    "rpn_bbox_loss",
    "mrcnn_class_loss",
    "mrcnn_bbox_loss",
    "mrcnn_mask_loss",
    "keypoint_loss",
)


class Rule(NamedTuple):
    name: str
    check: Callable[[object], bool]
    message: Union[str, Callable[[object], str]]


def attribute(name, test, message):
    """A rule on one attribute: test(value) -> True when the value is acceptable."""
    return Rule(name, lambda config: test(getattr(config, name)), message)


def one_of(name, choices):
    return attribute(name, lambda value: value in choices,
                     f"unknown {{name}} {{value!r}}; choose one of {', '.join(choices)}")


# ------------------------------------------------------------------ tests of one value
def is_positive_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def is_optional_fraction(value):
    """None, or a number (not a bool) in [0, 1)."""
    return value is None or (not isinstance(value, bool) and isinstance(value, (int, float))
                             and 0.0 <= value < 1.0)


def is_seed(value):
    return value is None or (not isinstance(value, bool) and isinstance(value, (int, np.integer))
                             and 0 <= value < 2 ** 32)


def is_unit_interval(value):
    return 0.0 <= float(value) <= 1.0


# ------------------------------------------------------------------ rules across settings
def box_modes_agree(config):
    return config.PROPOSAL_MODE == config.DETECTION_MODE


def matterport_boxes_pooled_by_crop_and_resize(config):
    return config.PROPOSAL_MODE != "matterport" or config.ROI_ALIGN_MODE == "crop_and_resize"


def matterport_normalization_has_unit_std(config):
    std = tuple(config.PIXEL_STD)
    return config.IMAGE_NORMALIZATION != "matterport" or std == (1.0,) * len(std)


def canvas_fits(config):
    """() or (height, width): positive multiples of 64, the larger one IMAGE_MAX_DIM."""
    canvas = tuple(config.IMAGE_CANVAS_SHAPE or ())
    return not canvas or (len(canvas) == 2 and not any(
        isinstance(v, bool) or not isinstance(v, int) or v <= 0 or v % 64 for v in canvas)
        and max(canvas) == config.IMAGE_MAX_DIM)


def min_dim_fits(config):
    return config.IMAGE_MIN_DIM <= config.IMAGE_MAX_DIM


def resize_max_side_fits(config):
    return 0 <= config.IMAGE_RESIZE_MAX_SIDE <= config.IMAGE_MAX_DIM


def torchvision_layout_has_resnet(config):
    return config.LAYOUT != "torchvision" or config.BACKBONE.startswith("resnet")


def keypoint_mask_matches_pool(config):
    """The keypoint head's deconvolution (x2) then upsampling (x2) turn the pool into the map."""
    return config.KEYPOINT_MASK_SHAPE == 4 * config.KEYPOINT_POOL_SIZE


def mask_matches_pool(config):
    return tuple(config.MASK_SHAPE) == (2 * config.MASK_POOL_SIZE, 2 * config.MASK_POOL_SIZE)


def rpn_ious_ordered(config):
    return config.RPN_NEGATIVE_IOU <= config.RPN_POSITIVE_IOU


def one_anchor_scale_per_level(config):
    return len(config.RPN_ANCHOR_SCALES) == len(config.BACKBONE_STRIDES)


def pre_nms_levels(config):
    """LAYOUT "torchvision" keeps PRE_NMS_LIMIT boxes per pyramid level, the others in all."""
    return len(config.BACKBONE_STRIDES) if config.LAYOUT == "torchvision" else 1


def enough_boxes_before_nms(config):
    return config.PRE_NMS_LIMIT * pre_nms_levels(config) >= config.POST_NMS_ROIS_INFERENCE


def detections_within_proposals(config):
    return config.DETECTION_MAX_INSTANCES <= config.POST_NMS_ROIS_INFERENCE


def rate_and_decay_valid(config):
    return not (config.LEARNING_RATE <= 0 or config.WEIGHT_DECAY < 0)


def scale_range_ordered(config):
    lo, hi = config.AUGMENT_SCALE_RANGE
    return 0 < lo <= hi


def finite_numbers(name, count):
    """A rule: `name` holds `count` (an int, or a function of the config) finite numbers."""
    def want(config):
        return count(config) if callable(count) else count

    def check(config):
        value = tuple(getattr(config, name))
        return len(value) == want(config) and not any(not np.isfinite(v) for v in value)

    return Rule(name, check, lambda config: f"{name} must hold {want(config)} finite numbers, "
                                            f"got {tuple(getattr(config, name))}")


def positive_numbers(name):
    return Rule(name, lambda config: not any(v <= 0 for v in tuple(getattr(config, name))),
                lambda config: f"{name} must be positive, got {tuple(getattr(config, name))}")


def _channels(config):
    return config.IMAGE_CHANNEL_COUNT


def _image_max_dim_message(config):
    side = config.IMAGE_MAX_DIM
    return (f"IMAGE_MAX_DIM must be divisible by 64 (the FPN downsamples 6 times), got {side}; "
            f"use {side // 64 * 64 or 64} or {(side // 64 + 1) * 64}")


def _pre_nms_message(config):
    per_level = " per level" if pre_nms_levels(config) > 1 else ""
    return (f"PRE_NMS_LIMIT ({config.PRE_NMS_LIMIT}{per_level}) must be >= "
            f"POST_NMS_ROIS_INFERENCE ({config.POST_NMS_ROIS_INFERENCE})")


POSITIVE_INTEGERS = (
    "GPU_COUNT", "IMAGES_PER_GPU", "NUM_CLASSES", "NUM_KEYPOINTS", "KEYPOINT_MASK_SHAPE",
    "KEYPOINT_POOL_SIZE", "POOL_SIZE", "MASK_POOL_SIZE", "TOP_DOWN_PYRAMID_SIZE",
    "FPN_CLASSIF_FC_LAYERS_SIZE", "MASK_HEAD_CHANNELS", "KEYPOINT_HEAD_CONV_CHANNELS",
    "KEYPOINT_HEAD_NUM_CONVS", "RPN_ANCHOR_STRIDE", "RPN_CONV_CHANNELS",
    "RPN_TRAIN_ANCHORS_PER_IMAGE", "PRE_NMS_LIMIT", "POST_NMS_ROIS_TRAINING",
    "POST_NMS_ROIS_INFERENCE", "TRAIN_ROIS_PER_IMAGE", "MAX_GT_INSTANCES",
    "DETECTION_MAX_INSTANCES", "IMAGE_MAX_DIM", "IMAGE_CHANNEL_COUNT", "STEPS_PER_EPOCH",
    "ROI_ALIGN_SAMPLING_RATIO",
)
FRACTIONS = (  # in [0, 1]
    "ROI_POSITIVE_RATIO", "RPN_NMS_THRESHOLD", "DETECTION_NMS_THRESHOLD",
    "DETECTION_MIN_CONFIDENCE", "RPN_POSITIVE_IOU", "RPN_NEGATIVE_IOU", "ROI_POSITIVE_IOU",
    "LEARNING_MOMENTUM",
)

RULES = (
    *(attribute(name, is_positive_int, "{name} must be a positive integer, got {value!r}")
      for name in POSITIVE_INTEGERS),
    attribute("NUM_CLASSES", lambda value: value >= 2,
              "NUM_CLASSES counts the background too and must be >= 2, got {value}"),
    one_of("BACKBONE", BACKBONES),
    one_of("KEYPOINT_HEAD", KEYPOINT_HEADS),
    one_of("LAYOUT", LAYOUTS),
    one_of("IMAGE_RESIZE_MODE", RESIZE_MODES),
    one_of("ROI_ALIGN_MODE", ROI_ALIGN_MODES),
    one_of("PROPOSAL_MODE", BOX_MODES),
    one_of("DETECTION_MODE", BOX_MODES),
    one_of("IMAGE_RESIZE_METHOD", IMAGE_RESIZE_METHODS),
    one_of("IMAGE_NORMALIZATION", IMAGE_NORMALIZATIONS),
    one_of("UNMOLD_MODE", UNMOLD_MODES),
    Rule("PROPOSAL_MODE", box_modes_agree,
         "PROPOSAL_MODE ({PROPOSAL_MODE!r}) and DETECTION_MODE ({DETECTION_MODE!r}) must be the "
         "same: the ROIs pass between them in those coordinates"),
    Rule("PROPOSAL_MODE", matterport_boxes_pooled_by_crop_and_resize,
         "PROPOSAL_MODE 'matterport' keeps matterport's normalised boxes, which only "
         "ROI_ALIGN_MODE 'crop_and_resize' pools; got {ROI_ALIGN_MODE!r}"),
    Rule("IMAGE_NORMALIZATION", matterport_normalization_has_unit_std,
         lambda config: f"IMAGE_NORMALIZATION 'matterport' subtracts MEAN_PIXEL only; PIXEL_STD "
                        f"must be all 1, got {tuple(config.PIXEL_STD)}"),
    one_of("KEYPOINT_DECODER", KEYPOINT_DECODERS),
    attribute("BN_MOMENTUM", lambda value: 0.0 <= float(value) < 1.0,
              "BN_MOMENTUM must be in [0, 1), got {value!r}"),
    attribute("BACKBONE_BN_EPSILON", is_optional_fraction,
              "BACKBONE_BN_EPSILON must be None or a number in [0, 1), got {value!r}"),
    one_of("OPTIMIZER", OPTIMIZERS),
    attribute("SEED", is_seed, "SEED must be None or an integer in [0, 2**32), got {value!r}"),
    one_of("LR_SCHEDULE", LR_SCHEDULES),
    attribute("IMAGE_MAX_DIM", lambda value: not value % 64, _image_max_dim_message),
    Rule("IMAGE_CANVAS_SHAPE", canvas_fits,
         lambda config: f"IMAGE_CANVAS_SHAPE must be () or (height, width), positive multiples "
                        f"of 64 whose larger is IMAGE_MAX_DIM ({config.IMAGE_MAX_DIM}), got "
                        f"{tuple(config.IMAGE_CANVAS_SHAPE or ())!r}"),
    Rule("IMAGE_MIN_DIM", min_dim_fits,
         "IMAGE_MIN_DIM ({IMAGE_MIN_DIM}) cannot exceed IMAGE_MAX_DIM ({IMAGE_MAX_DIM})"),
    Rule("IMAGE_RESIZE_MAX_SIDE", resize_max_side_fits,
         "IMAGE_RESIZE_MAX_SIDE must be between 0 and IMAGE_MAX_DIM ({IMAGE_MAX_DIM}), got "
         "{IMAGE_RESIZE_MAX_SIDE}"),
    Rule("LAYOUT", torchvision_layout_has_resnet,
         "LAYOUT 'torchvision' needs a ResNet BACKBONE, got {BACKBONE!r}"),
    attribute("KEYPOINT_MASK_SHAPE", lambda value: not value % 2,
              "KEYPOINT_MASK_SHAPE must be even (the head upsamples by 2), got {value}"),
    Rule("KEYPOINT_MASK_SHAPE", keypoint_mask_matches_pool,
         "KEYPOINT_MASK_SHAPE ({KEYPOINT_MASK_SHAPE}) must be 4 x KEYPOINT_POOL_SIZE "
         "({KEYPOINT_POOL_SIZE}): deconv x2 then upsample x2"),
    Rule("MASK_SHAPE", mask_matches_pool,
         lambda config: f"MASK_SHAPE {tuple(config.MASK_SHAPE)} must be twice MASK_POOL_SIZE "
                        f"({config.MASK_POOL_SIZE})"),
    *(attribute(name, is_unit_interval, "{name} must be between 0 and 1, got {value}")
      for name in FRACTIONS),
    attribute("ROI_POSITIVE_RATIO", lambda value: 0.0 < value <= 1.0,
              "ROI_POSITIVE_RATIO must be in (0, 1], got {value}"),
    Rule("RPN_NEGATIVE_IOU", rpn_ious_ordered,
         "RPN_NEGATIVE_IOU ({RPN_NEGATIVE_IOU}) cannot exceed RPN_POSITIVE_IOU "
         "({RPN_POSITIVE_IOU})"),
    Rule("RPN_ANCHOR_SCALES", one_anchor_scale_per_level,
         lambda config: f"RPN_ANCHOR_SCALES needs one scale per pyramid level "
                        f"({len(config.BACKBONE_STRIDES)}), got {len(config.RPN_ANCHOR_SCALES)}"),
    attribute("RPN_ANCHOR_RATIOS", lambda value: bool(value) and not any(r <= 0 for r in value),
              lambda config: f"RPN_ANCHOR_RATIOS must be positive, got "
                             f"{tuple(config.RPN_ANCHOR_RATIOS)}"),
    finite_numbers("RPN_BBOX_STD_DEV", 4),
    positive_numbers("RPN_BBOX_STD_DEV"),
    finite_numbers("BBOX_STD_DEV", 4),
    positive_numbers("BBOX_STD_DEV"),
    finite_numbers("MEAN_PIXEL", _channels),
    finite_numbers("PIXEL_STD", _channels),
    positive_numbers("PIXEL_STD"),
    Rule("PRE_NMS_LIMIT", enough_boxes_before_nms, _pre_nms_message),
    Rule("DETECTION_MAX_INSTANCES", detections_within_proposals,
         "DETECTION_MAX_INSTANCES ({DETECTION_MAX_INSTANCES}) cannot exceed "
         "POST_NMS_ROIS_INFERENCE ({POST_NMS_ROIS_INFERENCE})"),
    attribute("LOSS_WEIGHTS", lambda value: set(value) == set(LOSS_NAMES),
              lambda config: f"LOSS_WEIGHTS must have exactly the keys {', '.join(LOSS_NAMES)}; "
                             f"got {', '.join(sorted(config.LOSS_WEIGHTS))}"),
    attribute("LOSS_WEIGHTS", lambda value: not any(float(w) < 0 for w in value.values()),
              "LOSS_WEIGHTS must be >= 0, got {value}"),
    Rule("LEARNING_RATE", rate_and_decay_valid,
         "LEARNING_RATE must be > 0 and WEIGHT_DECAY >= 0, got {LEARNING_RATE}, {WEIGHT_DECAY}"),
    Rule("AUGMENT_SCALE_RANGE", scale_range_ordered,
         lambda config: f"AUGMENT_SCALE_RANGE must be (min, max) with 0 < min <= max, got "
                        f"{tuple(config.AUGMENT_SCALE_RANGE)}"),
)


def message_of(rule, config):
    if callable(rule.message):
        return rule.message(config)
    values = {name: getattr(config, name) for name in dir(config) if name.isupper()}
    return rule.message.format(name=rule.name, value=getattr(config, rule.name), **values)


def first_problem(config, rules=RULES):
    """The message of the first rule config breaks, or None when it keeps them all."""
    for rule in rules:
        if not rule.check(config):
            return message_of(rule, config)
    return None
