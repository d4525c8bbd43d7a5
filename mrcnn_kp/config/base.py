"""Every hyper-parameter of the model, the data pipeline and the trainer, in one place.

Use it like matterport's Config: subclass and override class attributes, then instantiate.

    class PersonConfig(Config):
        NAME = "person"
        IMAGES_PER_GPU = 2

    config = PersonConfig()          # derived values computed, everything validated
    config.display()

Overrides can also be given as keyword arguments (`Config(IMAGE_MAX_DIM=512)`), and a config
round-trips through JSON (`Config.from_dict(json.load(f))`), which is how checkpoints record it.
"""
import copy
import json
import math

import numpy as np

from mrcnn_kp import constants

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
LOSS_NAMES = (
    "rpn_class_loss",
    "rpn_bbox_loss",
    "mrcnn_class_loss",
    "mrcnn_bbox_loss",
    "mrcnn_mask_loss",
    "keypoint_loss",
)


class ConfigError(ValueError):
    """An impossible or unknown configuration value."""


class Config:
    """Base configuration. Values are matterport's defaults where matterport has the value."""

    # ---- identity and batch --------------------------------------------------------------
    NAME = "coco_keypoints"  # run directories are logs/<name><timestamp>
    GPU_COUNT = 1
    IMAGES_PER_GPU = 2
    STEPS_PER_EPOCH = 1000
    VALIDATION_STEPS = 50

    # ---- classes and keypoints ----------------------------------------------------------
    NUM_CLASSES = 2  # background + person
    NUM_KEYPOINTS = constants.NUM_KEYPOINTS  # 17 COCO joints
    KEYPOINT_MASK_SHAPE = 56  # side of the one-hot keypoint heatmap
    KEYPOINT_POOL_SIZE = 14  # ROIAlign output size for the keypoint head
    KEYPOINT_HEAD = "deconv4"  # "deconv4" (published) or "humanpose" (Mask_RCNN_Humanpose)
    # Heatmap decoding at inference (ops.keypoints): "window" evaluates the bicubic resize in a
    # window around the 56 x 56 argmax; "exact" resizes each roi's whole map (padded to the
    # canvas side) and takes its global argmax, torchvision's heatmaps_to_keypoints exactly.
    KEYPOINT_DECODER = "window"
    KEYPOINT_HEAD_CONV_CHANNELS = 512
    KEYPOINT_HEAD_NUM_CONVS = 8
    KEYPOINT_ROIS_PER_IMAGE = 0  # 0: every positive ROI trains the keypoint head
    USE_MASK_HEAD = True

    # ---- architecture ---------------------------------------------------------------------
    LAYOUT = "matterport"
    BACKBONE = "resnet50"
    BACKBONE_STRIDES = (4, 8, 16, 32, 64)
    TRAIN_BN = False  # False: batch-norm frozen (inference mode) while training
    # Moving-statistics momentum of trained batch-norm (Keras' 0.99). Training from scratch or
    # with a fast optimizer, 0.99 lags the weights: inference then normalises with stale
    # statistics (a model with a low training loss can then score every person near 0).
    BN_MOMENTUM = 0.99
    # Batch-norm epsilon of the ResNet backbone; None: the layout's own (matterport 1e-3,
    # torchvision 1e-5). torchvision runs its published COCO_V1 keypoint weights with 0
    # (overwrite_eps), so their converted config says 0.0.
    BACKBONE_BN_EPSILON = None
    TOP_DOWN_PYRAMID_SIZE = 256  # FPN channels
    FPN_CLASSIF_FC_LAYERS_SIZE = 1024
    MASK_HEAD_CHANNELS = 256
    POOL_SIZE = 7
    MASK_POOL_SIZE = 14
    MASK_SHAPE = (28, 28)
    ROI_ALIGN_MODE = "roi_align"  # true ROIAlign; "crop_and_resize" reproduces matterport
    ROI_ALIGN_SAMPLING_RATIO = 2
    ROI_ALIGN_ALIGNED = True

    # ---- RPN and proposals ----------------------------------------------------------------
    RPN_ANCHOR_SCALES = (32, 64, 128, 256, 512)  # one scale per level P2..P6, in pixels
    RPN_ANCHOR_RATIOS = (0.5, 1.0, 2.0)  # width / height
    RPN_ANCHOR_STRIDE = 1
    RPN_CONV_CHANNELS = 512  # rpn_conv_shared width (matterport 512; the light presets: the FPN's)
    RPN_NMS_THRESHOLD = 0.7
    RPN_TRAIN_ANCHORS_PER_IMAGE = 256
    RPN_POSITIVE_IOU = 0.7
    RPN_NEGATIVE_IOU = 0.3
    RPN_BBOX_STD_DEV = (0.1, 0.1, 0.2, 0.2)
    PRE_NMS_LIMIT = 6000
    POST_NMS_ROIS_TRAINING = 2000
    POST_NMS_ROIS_INFERENCE = 1000
    # "matterport": top-k, deltas, clip and NMS on matterport's normalised (y1, x1, y2, x2)
    # boxes (norm_boxes, -1 on the far edge), no cap on the log-scales (ops.matterport).
    PROPOSAL_MODE = "pixels"

    # ---- ROI sampling and heads -----------------------------------------------------------
    TRAIN_ROIS_PER_IMAGE = 200
    ROI_POSITIVE_RATIO = 0.33
    ROI_POSITIVE_IOU = 0.5
    ROI_ADD_GT_BOXES = True  # append ground-truth boxes to the proposals while training
    BBOX_STD_DEV = (0.1, 0.1, 0.2, 0.2)
    MAX_GT_INSTANCES = 100
    USE_MINI_MASK = True
    MINI_MASK_SHAPE = (56, 56)

    # ---- detection ----------------------------------------------------------------------
    DETECTION_MAX_INSTANCES = 100
    DETECTION_MIN_CONFIDENCE = 0.7
    DETECTION_NMS_THRESHOLD = 0.3
    # "matterport": refine_detections: argmax over all classes (background included), keep
    # class > 0 and score >= DETECTION_MIN_CONFIDENCE (padding ROIs and empty boxes too),
    # refine and clip to the window in normalised coordinates, per-class NMS, top-k.
    DETECTION_MODE = "pixels"

    # ---- input ----------------------------------------------------------------------------
    IMAGE_RESIZE_MODE = "square"
    IMAGE_MIN_DIM = 800
    IMAGE_MAX_DIM = 1024
    IMAGE_MIN_SCALE = 0
    # The static canvas every image is molded into: () is IMAGE_MAX_DIM x IMAGE_MAX_DIM;
    # (height, width), multiples of 64 with the longer one IMAGE_MAX_DIM, is a non-square one
    # (e.g. (832, 1088) for 4:3 landscape photos at 800 px, 27 % fewer pixels than 1088^2);
    # images are scaled down where needed to fit it.
    IMAGE_CANVAS_SHAPE = ()
    # IMAGE_RESIZE_MODE "torchvision": scale = min(IMAGE_MIN_DIM / short side,
    # IMAGE_RESIZE_MAX_SIDE / long side) (0: IMAGE_MAX_DIM), image at the top-left corner.
    IMAGE_RESIZE_MAX_SIDE = 0
    IMAGE_CHANNEL_COUNT = 3
    MEAN_PIXEL = (123.7, 116.8, 103.9)
    PIXEL_STD = (1.0, 1.0, 1.0)  # matterport subtracts the mean only
    # "matterport": skimage resize with matterport's arguments (slow, bit-exact); "pil": Pillow.
    IMAGE_RESIZE_METHOD = "pil"
    # "matterport": float32(float64(image) - MEAN_PIXEL) as its mold_image (TensorFlow; JAX
    # without x64 computes in float32, 1 ulp apart in places); needs PIXEL_STD = 1.
    IMAGE_NORMALIZATION = "float32"
    # "matterport": unmold_detections: integer boxes (np.around), zero-area boxes dropped, the
    # 28x28 mask resized to the box with skimage and thresholded at 0.5 (utils.unmold_mask).
    UNMOLD_MODE = "continuous"

    # ---- augmentation ---------------------------------------------------------------------
    AUGMENT_FLIP = True
    AUGMENT_SCALE_RANGE = (1.0, 1.0)  # scale jitter (min, max); (1, 1) disables it

    # ---- optimisation -----------------------------------------------------------------------
    LEARNING_RATE = 0.001
    OPTIMIZER = "sgd"  # "sgd" (momentum, matterport) or "adamw" (beta_1 = momentum)
    LEARNING_MOMENTUM = 0.9
    WEIGHT_DECAY = 0.0001
    LR_SCHEDULE = "step"
    LR_WARMUP_STEPS = 0
    LR_STEP_DECAY_EPOCHS = ()  # epochs after which the rate is multiplied by LR_STEP_FACTOR
    LR_STEP_FACTOR = 0.1
    GRADIENT_CLIP_NORM = 5.0
    MIXED_PRECISION = False
    # None: weights start from fresh random values each run. An integer seeds everything
    # (weight init, ROI sampling, data order and augmentation) and turns on TensorFlow's op
    # determinism: the same seed gives bitwise the same weights on the same machine
    # (mrcnn_kp.training.determinism; docs/RELIABILITY.md says what else that needs).
    SEED = None
    LOSS_WEIGHTS = {
        "rpn_class_loss": 1.0,
        "rpn_bbox_loss": 1.0,
        "mrcnn_class_loss": 1.0,
        "mrcnn_bbox_loss": 1.0,
        "mrcnn_mask_loss": 1.0,
        "keypoint_loss": 1.0,
    }

    # Names of the values computed from the others; never set them directly.
    DERIVED = ("BATCH_SIZE", "IMAGE_SHAPE", "BACKBONE_SHAPES", "NUM_ANCHORS_PER_LOCATION",
               "NUM_ANCHORS", "IMAGE_META_SIZE")

    def __init__(self, **overrides):
        for name, value in overrides.items():
            if name in self.DERIVED:
                raise ConfigError(f"{name} is derived from other values and cannot be set")
            if not name.isupper() or not hasattr(self, name):
                raise ConfigError(f"unknown config attribute {name!r}")
            setattr(self, name, value)
        # Instances own their mutable values, so one config never edits another.
        self.LOSS_WEIGHTS = dict(self.LOSS_WEIGHTS)
        self._compute_derived()
        self.validate()

    # ------------------------------------------------------------------ derived values
    def _compute_derived(self):
        self.BATCH_SIZE = self.IMAGES_PER_GPU * self.GPU_COUNT
        # Every image is resized into, then padded to, one static canvas so graphs compile once:
        # a square of IMAGE_MAX_DIM unless IMAGE_CANVAS_SHAPE names (height, width).
        canvas = tuple(self.IMAGE_CANVAS_SHAPE or ())
        height, width = canvas if len(canvas) == 2 else (self.IMAGE_MAX_DIM,) * 2
        self.IMAGE_SHAPE = (int(height), int(width), self.IMAGE_CHANNEL_COUNT)
        # Feature map size per pyramid level P2..P6: ceil(side / stride).
        self.BACKBONE_SHAPES = tuple(
            (int(math.ceil(self.IMAGE_SHAPE[0] / s)), int(math.ceil(self.IMAGE_SHAPE[1] / s)))
            for s in self.BACKBONE_STRIDES
        )
        self.NUM_ANCHORS_PER_LOCATION = len(self.RPN_ANCHOR_RATIOS)
        self.NUM_ANCHORS = int(sum(
            math.ceil(h / self.RPN_ANCHOR_STRIDE) * math.ceil(w / self.RPN_ANCHOR_STRIDE)
            for h, w in self.BACKBONE_SHAPES
        ) * self.NUM_ANCHORS_PER_LOCATION)
        # image_meta: id, original shape (3), molded shape (3), window (4), scale, class ids.
        self.IMAGE_META_SIZE = 1 + 3 + 3 + 4 + 1 + self.NUM_CLASSES

    # ------------------------------------------------------------------ validation
    def validate(self):
        """Raise ConfigError with a clear message for the first impossible value found."""

        def fail(msg):
            raise ConfigError(f"{type(self).__name__}: {msg}")

        def positive_int(name):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                fail(f"{name} must be a positive integer, got {value!r}")

        for name in ("GPU_COUNT", "IMAGES_PER_GPU", "NUM_CLASSES", "NUM_KEYPOINTS",
                     "KEYPOINT_MASK_SHAPE", "KEYPOINT_POOL_SIZE", "POOL_SIZE", "MASK_POOL_SIZE",
                     "TOP_DOWN_PYRAMID_SIZE", "FPN_CLASSIF_FC_LAYERS_SIZE", "MASK_HEAD_CHANNELS",
                     "KEYPOINT_HEAD_CONV_CHANNELS", "KEYPOINT_HEAD_NUM_CONVS",
                     "RPN_ANCHOR_STRIDE", "RPN_CONV_CHANNELS", "RPN_TRAIN_ANCHORS_PER_IMAGE",
                     "PRE_NMS_LIMIT", "POST_NMS_ROIS_TRAINING", "POST_NMS_ROIS_INFERENCE",
                     "TRAIN_ROIS_PER_IMAGE",
                     "MAX_GT_INSTANCES", "DETECTION_MAX_INSTANCES", "IMAGE_MAX_DIM",
                     "IMAGE_CHANNEL_COUNT", "STEPS_PER_EPOCH", "ROI_ALIGN_SAMPLING_RATIO"):
            positive_int(name)
        if self.NUM_CLASSES < 2:
            fail(f"NUM_CLASSES counts the background too and must be >= 2, got {self.NUM_CLASSES}")
        if self.BACKBONE not in BACKBONES:
            fail(f"unknown BACKBONE {self.BACKBONE!r}; choose one of {', '.join(BACKBONES)}")
        if self.KEYPOINT_HEAD not in KEYPOINT_HEADS:
            fail(f"unknown KEYPOINT_HEAD {self.KEYPOINT_HEAD!r}; choose one of "
                 f"{', '.join(KEYPOINT_HEADS)}")
        if self.LAYOUT not in LAYOUTS:
            fail(f"unknown LAYOUT {self.LAYOUT!r}; choose one of {', '.join(LAYOUTS)}")
        if self.IMAGE_RESIZE_MODE not in RESIZE_MODES:
            fail(f"unknown IMAGE_RESIZE_MODE {self.IMAGE_RESIZE_MODE!r}; choose one of "
                 f"{', '.join(RESIZE_MODES)}")
        if self.ROI_ALIGN_MODE not in ROI_ALIGN_MODES:
            fail(f"unknown ROI_ALIGN_MODE {self.ROI_ALIGN_MODE!r}; choose one of "
                 f"{', '.join(ROI_ALIGN_MODES)}")
        for name, choices in (("PROPOSAL_MODE", BOX_MODES), ("DETECTION_MODE", BOX_MODES),
                              ("IMAGE_RESIZE_METHOD", IMAGE_RESIZE_METHODS),
                              ("IMAGE_NORMALIZATION", IMAGE_NORMALIZATIONS),
                              ("UNMOLD_MODE", UNMOLD_MODES)):
            if getattr(self, name) not in choices:
                fail(f"unknown {name} {getattr(self, name)!r}; choose one of "
                     f"{', '.join(choices)}")
        if self.PROPOSAL_MODE != self.DETECTION_MODE:
            fail(f"PROPOSAL_MODE ({self.PROPOSAL_MODE!r}) and DETECTION_MODE "
                 f"({self.DETECTION_MODE!r}) must be the same: the ROIs pass between them in "
                 f"those coordinates")
        if self.PROPOSAL_MODE == "matterport" and self.ROI_ALIGN_MODE != "crop_and_resize":
            fail(f"PROPOSAL_MODE 'matterport' keeps matterport's normalised boxes, which only "
                 f"ROI_ALIGN_MODE 'crop_and_resize' pools; got {self.ROI_ALIGN_MODE!r}")
        if self.IMAGE_NORMALIZATION == "matterport" and tuple(self.PIXEL_STD) != (1.0,) * len(
                tuple(self.PIXEL_STD)):
            fail(f"IMAGE_NORMALIZATION 'matterport' subtracts MEAN_PIXEL only; PIXEL_STD must be "
                 f"all 1, got {tuple(self.PIXEL_STD)}")
        if self.KEYPOINT_DECODER not in KEYPOINT_DECODERS:
            fail(f"unknown KEYPOINT_DECODER {self.KEYPOINT_DECODER!r}; choose one of "
                 f"{', '.join(KEYPOINT_DECODERS)}")
        if not 0.0 <= float(self.BN_MOMENTUM) < 1.0:
            fail(f"BN_MOMENTUM must be in [0, 1), got {self.BN_MOMENTUM!r}")
        eps = self.BACKBONE_BN_EPSILON
        if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float))
                                or not 0.0 <= eps < 1.0):
            fail(f"BACKBONE_BN_EPSILON must be None or a number in [0, 1), got {eps!r}")
        if self.OPTIMIZER not in OPTIMIZERS:
            fail(f"unknown OPTIMIZER {self.OPTIMIZER!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.SEED is not None and (isinstance(self.SEED, bool) or not isinstance(
                self.SEED, (int, np.integer)) or not 0 <= self.SEED < 2 ** 32):
            fail(f"SEED must be None or an integer in [0, 2**32), got {self.SEED!r}")
        if self.LR_SCHEDULE not in LR_SCHEDULES:
            fail(f"unknown LR_SCHEDULE {self.LR_SCHEDULE!r}; choose one of {', '.join(LR_SCHEDULES)}")
        if self.IMAGE_MAX_DIM % 64:
            fail(f"IMAGE_MAX_DIM must be divisible by 64 (the FPN downsamples 6 times), got "
                 f"{self.IMAGE_MAX_DIM}; use {self.IMAGE_MAX_DIM // 64 * 64 or 64} or "
                 f"{(self.IMAGE_MAX_DIM // 64 + 1) * 64}")
        canvas = tuple(self.IMAGE_CANVAS_SHAPE or ())
        if canvas and (len(canvas) != 2 or any(
                isinstance(v, bool) or not isinstance(v, int) or v <= 0 or v % 64
                for v in canvas) or max(canvas) != self.IMAGE_MAX_DIM):
            fail(f"IMAGE_CANVAS_SHAPE must be () or (height, width), positive multiples of 64 "
                 f"whose larger is IMAGE_MAX_DIM ({self.IMAGE_MAX_DIM}), got {canvas!r}")
        if self.IMAGE_MIN_DIM > self.IMAGE_MAX_DIM:
            fail(f"IMAGE_MIN_DIM ({self.IMAGE_MIN_DIM}) cannot exceed IMAGE_MAX_DIM "
                 f"({self.IMAGE_MAX_DIM})")
        if not 0 <= self.IMAGE_RESIZE_MAX_SIDE <= self.IMAGE_MAX_DIM:
            fail(f"IMAGE_RESIZE_MAX_SIDE must be between 0 and IMAGE_MAX_DIM "
                 f"({self.IMAGE_MAX_DIM}), got {self.IMAGE_RESIZE_MAX_SIDE}")
        if self.LAYOUT == "torchvision" and not self.BACKBONE.startswith("resnet"):
            fail(f"LAYOUT 'torchvision' needs a ResNet BACKBONE, got {self.BACKBONE!r}")
        if self.KEYPOINT_MASK_SHAPE % 2:
            fail(f"KEYPOINT_MASK_SHAPE must be even (the head upsamples by 2), got "
                 f"{self.KEYPOINT_MASK_SHAPE}")
        if self.KEYPOINT_MASK_SHAPE != 4 * self.KEYPOINT_POOL_SIZE:
            fail(f"KEYPOINT_MASK_SHAPE ({self.KEYPOINT_MASK_SHAPE}) must be 4 x "
                 f"KEYPOINT_POOL_SIZE ({self.KEYPOINT_POOL_SIZE}): deconv x2 then upsample x2")
        if tuple(self.MASK_SHAPE) != (2 * self.MASK_POOL_SIZE, 2 * self.MASK_POOL_SIZE):
            fail(f"MASK_SHAPE {tuple(self.MASK_SHAPE)} must be twice MASK_POOL_SIZE "
                 f"({self.MASK_POOL_SIZE})")
        for name in ("ROI_POSITIVE_RATIO", "RPN_NMS_THRESHOLD", "DETECTION_NMS_THRESHOLD",
                     "DETECTION_MIN_CONFIDENCE", "RPN_POSITIVE_IOU", "RPN_NEGATIVE_IOU",
                     "ROI_POSITIVE_IOU", "LEARNING_MOMENTUM"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                fail(f"{name} must be between 0 and 1, got {value}")
        if not 0.0 < self.ROI_POSITIVE_RATIO <= 1.0:
            fail(f"ROI_POSITIVE_RATIO must be in (0, 1], got {self.ROI_POSITIVE_RATIO}")
        if self.RPN_NEGATIVE_IOU > self.RPN_POSITIVE_IOU:
            fail(f"RPN_NEGATIVE_IOU ({self.RPN_NEGATIVE_IOU}) cannot exceed RPN_POSITIVE_IOU "
                 f"({self.RPN_POSITIVE_IOU})")
        if len(self.RPN_ANCHOR_SCALES) != len(self.BACKBONE_STRIDES):
            fail(f"RPN_ANCHOR_SCALES needs one scale per pyramid level "
                 f"({len(self.BACKBONE_STRIDES)}), got {len(self.RPN_ANCHOR_SCALES)}")
        if not self.RPN_ANCHOR_RATIOS or any(r <= 0 for r in self.RPN_ANCHOR_RATIOS):
            fail(f"RPN_ANCHOR_RATIOS must be positive, got {tuple(self.RPN_ANCHOR_RATIOS)}")
        for name in ("RPN_BBOX_STD_DEV", "BBOX_STD_DEV", "MEAN_PIXEL", "PIXEL_STD"):
            value = tuple(getattr(self, name))
            want = 4 if "BBOX" in name else self.IMAGE_CHANNEL_COUNT
            if len(value) != want or any(not np.isfinite(v) for v in value):
                fail(f"{name} must hold {want} finite numbers, got {value}")
            if name != "MEAN_PIXEL" and any(v <= 0 for v in value):
                fail(f"{name} must be positive, got {value}")
        # LAYOUT "torchvision" keeps PRE_NMS_LIMIT boxes per pyramid level
        levels = len(self.BACKBONE_STRIDES) if self.LAYOUT == "torchvision" else 1
        if self.PRE_NMS_LIMIT * levels < self.POST_NMS_ROIS_INFERENCE:
            fail(f"PRE_NMS_LIMIT ({self.PRE_NMS_LIMIT}{' per level' if levels > 1 else ''}) "
                 f"must be >= POST_NMS_ROIS_INFERENCE ({self.POST_NMS_ROIS_INFERENCE})")
        if self.DETECTION_MAX_INSTANCES > self.POST_NMS_ROIS_INFERENCE:
            fail(f"DETECTION_MAX_INSTANCES ({self.DETECTION_MAX_INSTANCES}) cannot exceed "
                 f"POST_NMS_ROIS_INFERENCE ({self.POST_NMS_ROIS_INFERENCE})")
        if set(self.LOSS_WEIGHTS) != set(LOSS_NAMES):
            fail(f"LOSS_WEIGHTS must have exactly the keys {', '.join(LOSS_NAMES)}; got "
                 f"{', '.join(sorted(self.LOSS_WEIGHTS))}")
        if any(float(w) < 0 for w in self.LOSS_WEIGHTS.values()):
            fail(f"LOSS_WEIGHTS must be >= 0, got {self.LOSS_WEIGHTS}")
        if self.LEARNING_RATE <= 0 or self.WEIGHT_DECAY < 0:
            fail(f"LEARNING_RATE must be > 0 and WEIGHT_DECAY >= 0, got {self.LEARNING_RATE}, "
                 f"{self.WEIGHT_DECAY}")
        lo, hi = self.AUGMENT_SCALE_RANGE
        if not 0 < lo <= hi:
            fail(f"AUGMENT_SCALE_RANGE must be (min, max) with 0 < min <= max, got "
                 f"{tuple(self.AUGMENT_SCALE_RANGE)}")
        return self

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self):
        """Every upper-case attribute (derived ones included) as JSON-friendly values."""
        out = {}
        for name in sorted(dir(self)):
            if not name.isupper() or name == "DERIVED":
                continue
            out[name] = _jsonable(getattr(self, name))
        return out

    @classmethod
    def from_dict(cls, values):
        """Rebuild a config from to_dict() output; derived values are recomputed and checked."""
        overrides = {k: v for k, v in values.items() if k not in cls.DERIVED and k != "DERIVED"}
        unknown = [k for k in overrides if not hasattr(cls, k)]
        if unknown:
            raise ConfigError(f"unknown config attribute(s) {', '.join(sorted(unknown))}")
        config = cls(**{k: _from_json(getattr(cls, k), v) for k, v in overrides.items()})
        for name in cls.DERIVED:
            if name in values and _jsonable(getattr(config, name)) != values[name]:
                raise ConfigError(f"derived value {name} is {values[name]!r} in the file but "
                                  f"{_jsonable(getattr(config, name))!r} when recomputed")
        return config

    def to_json(self, path=None):
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            from mrcnn_kp.utils import atomic_write_text

            atomic_write_text(path, text)
        return text

    @classmethod
    def from_json(cls, path_or_text):
        text = str(path_or_text)
        if not text.lstrip().startswith("{"):
            with open(path_or_text, encoding="utf-8") as f:
                text = f.read()
        return cls.from_dict(json.loads(text))

    def copy(self, **overrides):
        values = {k: v for k, v in self.to_dict().items() if k not in self.DERIVED}
        values.update(overrides)
        return type(self).from_dict(values)

    def display(self, file=None):
        """Print every value, matterport-style."""
        print("\nConfigurations:", file=file)
        for name, value in self.to_dict().items():
            print(f"{name:30} {value}", file=file)
        print(file=file)

    def __repr__(self):
        return f"<{type(self).__name__} NAME={self.NAME!r} BACKBONE={self.BACKBONE!r} " \
               f"IMAGE_SHAPE={self.IMAGE_SHAPE}>"


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return copy.deepcopy(value)


def _from_json(default, value):
    """Give a JSON value back the container type of the class default (tuples stay tuples)."""
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(_from_json(default[0] if default else None, v) for v in value)
    return value


class TinyConfig(Config):
    """Seconds-per-step settings for tests: 128 px images, a light backbone, narrow heads."""

    NAME = "tiny"
    IMAGES_PER_GPU = 2
    STEPS_PER_EPOCH = 4
    VALIDATION_STEPS = 1
    BACKBONE = "efficientnet_lite0"
    # The ImageNet EfficientNet-Lite0 weights expect (x - 127) / 128 (mrcnn_kp.pretrained).
    MEAN_PIXEL = (127.0, 127.0, 127.0)
    PIXEL_STD = (128.0, 128.0, 128.0)
    IMAGE_MIN_DIM = 128
    IMAGE_MAX_DIM = 128
    RPN_ANCHOR_SCALES = (16, 32, 64, 128, 256)
    TOP_DOWN_PYRAMID_SIZE = 32
    FPN_CLASSIF_FC_LAYERS_SIZE = 64
    MASK_HEAD_CHANNELS = 32
    KEYPOINT_HEAD_CONV_CHANNELS = 32
    KEYPOINT_HEAD_NUM_CONVS = 2
    RPN_TRAIN_ANCHORS_PER_IMAGE = 64
    PRE_NMS_LIMIT = 256
    POST_NMS_ROIS_TRAINING = 64
    POST_NMS_ROIS_INFERENCE = 32
    TRAIN_ROIS_PER_IMAGE = 32
    MAX_GT_INSTANCES = 8
    DETECTION_MAX_INSTANCES = 8
    DETECTION_MIN_CONFIDENCE = 0.0
    MINI_MASK_SHAPE = (28, 28)


class CpuDemoConfig(Config):
    """The built-in demo: a light backbone at 256 px that learns the synthetic set on 2 CPU cores."""

    NAME = "demo"
    IMAGES_PER_GPU = 4
    STEPS_PER_EPOCH = 20  # short epochs: the demo's time budget stops between epochs
    VALIDATION_STEPS = 5
    BACKBONE = "efficientnet_lite0"
    MEAN_PIXEL = (127.0, 127.0, 127.0)
    PIXEL_STD = (128.0, 128.0, 128.0)
    TRAIN_BN = True
    BN_MOMENTUM = 0.9  # moving statistics that keep up with AdamW
    IMAGE_MIN_DIM = 256
    IMAGE_MAX_DIM = 256
    RPN_ANCHOR_SCALES = (16, 32, 64, 128, 256)
    TOP_DOWN_PYRAMID_SIZE = 64
    RPN_CONV_CHANNELS = 64
    FPN_CLASSIF_FC_LAYERS_SIZE = 256
    MASK_HEAD_CHANNELS = 64
    KEYPOINT_HEAD_CONV_CHANNELS = 128
    KEYPOINT_HEAD_NUM_CONVS = 4
    KEYPOINT_ROIS_PER_IMAGE = 8
    USE_MASK_HEAD = False  # the demo measures keypoints and boxes; masks would double head cost
    RPN_TRAIN_ANCHORS_PER_IMAGE = 128
    PRE_NMS_LIMIT = 1000
    POST_NMS_ROIS_TRAINING = 200
    POST_NMS_ROIS_INFERENCE = 100
    TRAIN_ROIS_PER_IMAGE = 32
    MAX_GT_INSTANCES = 8
    DETECTION_MAX_INSTANCES = 20
    # COCO AP ranks every detection: keep low-confidence persons (0.05, as torchvision and
    # detectron2 evaluate); pictures draw only those >= 0.5 (commands.predict.PICTURE_MIN_SCORE)
    DETECTION_MIN_CONFIDENCE = 0.05
    OPTIMIZER = "adamw"  # learns far faster than SGD from scratch
    LEARNING_RATE = 0.001
    LR_SCHEDULE = "cosine"
    LR_WARMUP_STEPS = 50
    MINI_MASK_SHAPE = (28, 28)


class TorchvisionKeypointConfig(Config):
    """torchvision's keypointrcnn_resnet50_fpn, for its converted COCO weights
    (`mrcnn-kp convert --from torchvision`): ResNet-50 v1.5 + FPN, 256-channel RPN, TwoMLPHead,
    8 x 512 keypoint head, no mask head, ImageNet mean/std, min side 800 / max side 1333 (on a
    1344 canvas), and torchvision's inference thresholds.

    Box deltas keep our (dy, dx, log dh, log dw) order: the converter permutes torchvision's
    (dx, dy, dw, dh) outputs, and its coder weights become the std devs (RPN (1, 1, 1, 1), ROI
    1 / (10, 10, 5, 5)). RPN_ANCHOR_RATIOS are width / height, listed in torchvision's anchor
    order (its aspect ratios 0.5, 1, 2 are height / width).
    """

    NAME = "torchvision_kp"
    LAYOUT = "torchvision"
    BACKBONE = "resnet50"
    IMAGES_PER_GPU = 1
    MEAN_PIXEL = (123.675, 116.28, 103.53)  # 255 x (0.485, 0.456, 0.406)
    PIXEL_STD = (58.395, 57.12, 57.375)  # 255 x (0.229, 0.224, 0.225)
    IMAGE_RESIZE_MODE = "torchvision"
    IMAGE_MIN_DIM = 800
    IMAGE_MAX_DIM = 1344  # the canvas (a multiple of 64) that holds 1333 x 800
    IMAGE_RESIZE_MAX_SIDE = 1333
    RPN_ANCHOR_SCALES = (32, 64, 128, 256, 512)
    RPN_ANCHOR_RATIOS = (2.0, 1.0, 0.5)
    RPN_BBOX_STD_DEV = (1.0, 1.0, 1.0, 1.0)
    RPN_NMS_THRESHOLD = 0.7
    PRE_NMS_LIMIT = 1000  # per pyramid level (torchvision's pre_nms_top_n at test time)
    POST_NMS_ROIS_TRAINING = 2000
    POST_NMS_ROIS_INFERENCE = 1000
    BBOX_STD_DEV = (0.1, 0.1, 0.2, 0.2)
    ROI_ALIGN_SAMPLING_RATIO = 2
    ROI_ALIGN_ALIGNED = False
    TRAIN_ROIS_PER_IMAGE = 512
    ROI_POSITIVE_RATIO = 0.25
    USE_MASK_HEAD = False
    KEYPOINT_HEAD = "deconv4"
    KEYPOINT_HEAD_NUM_CONVS = 8
    KEYPOINT_HEAD_CONV_CHANNELS = 512
    KEYPOINT_DECODER = "exact"  # torchvision's global argmax of the resized map
    DETECTION_MIN_CONFIDENCE = 0.05
    DETECTION_NMS_THRESHOLD = 0.5
    DETECTION_MAX_INSTANCES = 100


class CocoCpuConfig(Config):
    """Real COCO people on a CPU: ImageNet EfficientNet-Lite0 at 512 px, scale jitter, batch 2,
    AdamW.

    The recipe of `mrcnn-kp train --config coco_cpu --pretrained imagenet` (docs/RESULTS.md:
    held-out keypoint AP 0.104 after 113 min on 2 cores): at 384 px without jitter the same
    schedule plateaued at 0.06-0.07 from the 24th epoch on, memorising the 827 training images
    (APm 0.006: a medium person was 20-60 px tall); 512 px with scale jitter 0.7-1.4 kept the
    held-out loss falling for 86 epochs. Batch-norm trains (batch statistics) so the fresh
    heads' BN layers normalise from the first step; the costly parts of a step are narrowed
    (RPN conv as wide as the FPN, 64 channels, 16 keypoint ROIs per image, no mask head);
    detection keeps low-confidence persons (0.05, as torchvision) because COCO AP rewards
    recall.
    """

    NAME = "coco_cpu"
    IMAGES_PER_GPU = 2
    STEPS_PER_EPOCH = 100
    VALIDATION_STEPS = 10
    BACKBONE = "efficientnet_lite0"
    MEAN_PIXEL = (127.0, 127.0, 127.0)  # what the ImageNet Lite0 weights expect
    PIXEL_STD = (128.0, 128.0, 128.0)
    TRAIN_BN = True
    BN_MOMENTUM = 0.9  # moving statistics that keep up with AdamW
    IMAGE_MIN_DIM = 512
    IMAGE_MAX_DIM = 512
    AUGMENT_SCALE_RANGE = (0.7, 1.4)  # log-uniform zoom with a random crop: against memorising
    RPN_ANCHOR_SCALES = (16, 32, 64, 128, 256)
    TOP_DOWN_PYRAMID_SIZE = 64  # FPN 3x3 convs and the RPN on P2 dominate a step on a CPU
    RPN_CONV_CHANNELS = 64
    FPN_CLASSIF_FC_LAYERS_SIZE = 256
    USE_MASK_HEAD = False  # keypoints and boxes are the goal; the mask head doubles head cost
    KEYPOINT_HEAD_CONV_CHANNELS = 128
    KEYPOINT_HEAD_NUM_CONVS = 4
    KEYPOINT_ROIS_PER_IMAGE = 16
    RPN_TRAIN_ANCHORS_PER_IMAGE = 256
    PRE_NMS_LIMIT = 2000
    POST_NMS_ROIS_TRAINING = 500
    POST_NMS_ROIS_INFERENCE = 300
    TRAIN_ROIS_PER_IMAGE = 64
    MAX_GT_INSTANCES = 16
    MINI_MASK_SHAPE = (28, 28)
    DETECTION_MAX_INSTANCES = 20
    DETECTION_MIN_CONFIDENCE = 0.05
    DETECTION_NMS_THRESHOLD = 0.5
    OPTIMIZER = "adamw"
    # heads and 4+ at 1e-3, all at 1e-4 (train's stage factor): at 2e-4 the keypoint loss
    # stalled at 6.1 and held-out keypoint AP was 0.031; at 1e-3 it fell to 5.2 (docs/RESULTS.md)
    LEARNING_RATE = 0.001
    WEIGHT_DECAY = 0.0001
    LR_SCHEDULE = "cosine"
    LR_WARMUP_STEPS = 100


PRESETS = {"default": Config, "tiny": TinyConfig, "cpu_demo": CpuDemoConfig,
           "coco_cpu": CocoCpuConfig,
           "torchvision": TorchvisionKeypointConfig}


class MatterportConfig(Config):
    """matterport's Mask_RCNN, to run its weights (mask_rcnn_coco.h5, Mask_RCNN_Humanpose .h5)
    and reproduce its inference numbers (docs/MATTERPORT.md).

    matterport's own defaults (ResNet-101, 81 COCO classes as mask_rcnn_coco.h5, 1024 px square,
    6000 anchors before NMS at 0.7 -> 1000 ROIs, per-class NMS 0.3, 100 detections at >= 0.7)
    and every compatibility option on "matterport": its crop_and_resize ROI pooling and level
    rule, its proposal and detection layers in normalised coordinates, its skimage resize and
    mold_image, its integer box unmolding and mask pasting. One image per batch, like its
    InferenceConfig. Override NUM_CLASSES, BACKBONE or KEYPOINT_HEAD for other files, e.g.
    Mask_RCNN_Humanpose: MatterportConfig(NUM_CLASSES=2, KEYPOINT_HEAD="humanpose").
    """

    NAME = "matterport"
    IMAGES_PER_GPU = 1
    NUM_CLASSES = 81
    BACKBONE = "resnet101"
    LAYOUT = "matterport"
    IMAGE_RESIZE_MODE = "square"
    IMAGE_MIN_DIM = 800
    IMAGE_MAX_DIM = 1024
    IMAGE_MIN_SCALE = 0
    MEAN_PIXEL = (123.7, 116.8, 103.9)
    PIXEL_STD = (1.0, 1.0, 1.0)
    RPN_ANCHOR_SCALES = (32, 64, 128, 256, 512)
    RPN_ANCHOR_RATIOS = (0.5, 1.0, 2.0)
    RPN_BBOX_STD_DEV = (0.1, 0.1, 0.2, 0.2)
    BBOX_STD_DEV = (0.1, 0.1, 0.2, 0.2)
    PRE_NMS_LIMIT = 6000
    RPN_NMS_THRESHOLD = 0.7
    POST_NMS_ROIS_TRAINING = 2000
    POST_NMS_ROIS_INFERENCE = 1000
    DETECTION_MAX_INSTANCES = 100
    DETECTION_MIN_CONFIDENCE = 0.7
    DETECTION_NMS_THRESHOLD = 0.3
    ROI_ALIGN_MODE = "crop_and_resize"
    PROPOSAL_MODE = "matterport"
    DETECTION_MODE = "matterport"
    IMAGE_RESIZE_METHOD = "matterport"
    IMAGE_NORMALIZATION = "matterport"
    UNMOLD_MODE = "matterport"


PRESETS["matterport"] = MatterportConfig
