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
from mrcnn_kp.image_meta import image_meta_size
from mrcnn_kp.config.validation import first_problem


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
    # Moving-statistics momentum of trained batch-norm (Keras' 0.99): the share of the old
    # statistics kept at each step. Inference normalises with the moving statistics, so they
    # must follow the weights; from scratch or with a fast optimizer a lower value (0.9) does.
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
        self.IMAGE_META_SIZE = image_meta_size(self.NUM_CLASSES)

    # ------------------------------------------------------------------ validation
    def validate(self):
        """Raise ConfigError with a clear message for the first impossible value found
        (the rules of mrcnn_kp.config.validation, in their order)."""
        problem = first_problem(self)
        if problem is not None:
            raise ConfigError(f"{type(self).__name__}: {problem}")
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
