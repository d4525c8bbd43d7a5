"""The named configurations (`--config NAME` on the commands): each one lists only what it
changes of the class it derives from, so its body reads as its recipe.

    default      Config                     matterport's defaults
    tiny         TinyConfig                 128 px, narrow: the tests and the notebooks
    cpu_demo     CpuDemoConfig              the built-in demo (CpuLite0Config at 256 px)
    coco_cpu     CocoCpuConfig              real COCO on a CPU (CpuLite0Config at 512 px)
    torchvision  TorchvisionKeypointConfig  torchvision's keypointrcnn_resnet50_fpn
    matterport   MatterportConfig           matterport's inference recipe for its .h5 files
"""
from mrcnn_kp.config.base import Config


class TinyConfig(Config):
    """Seconds-per-step settings for tests: 128 px images, a light backbone, narrow heads."""

    NAME = "tiny"
    STEPS_PER_EPOCH = 4
    VALIDATION_STEPS = 1
    BACKBONE = "efficientnet_lite0"
    # The ImageNet EfficientNet-Lite0 weights expect (x - 127) / 128 (mrcnn_kp.weights.lite0_imagenet).
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


class CpuLite0Config(Config):
    """What the CPU training presets (cpu_demo, coco_cpu) share: EfficientNet-Lite0 with
    trained batch-norm, the costly parts of a step narrowed, keypoints and boxes only, AdamW
    with cosine decay, and detection that keeps low-confidence persons for COCO AP.

    On a CPU at 256-512 px the FPN 3x3 convolutions and the RPN on P2 cost more than the
    backbone, so both run 64 channels wide; the mask head would double the heads' cost.
    """

    BACKBONE = "efficientnet_lite0"
    # The ImageNet EfficientNet-Lite0 weights expect (x - 127) / 128 (mrcnn_kp.weights.lite0_imagenet).
    MEAN_PIXEL = (127.0, 127.0, 127.0)
    PIXEL_STD = (128.0, 128.0, 128.0)
    # Batch-norm trains (batch statistics), so the fresh heads' BN layers normalise from the
    # first step; momentum 0.9 lets the moving statistics keep up with AdamW's fast updates.
    TRAIN_BN = True
    BN_MOMENTUM = 0.9
    RPN_ANCHOR_SCALES = (16, 32, 64, 128, 256)  # persons of 16-256 px on a small canvas
    TOP_DOWN_PYRAMID_SIZE = 64
    RPN_CONV_CHANNELS = 64
    FPN_CLASSIF_FC_LAYERS_SIZE = 256
    USE_MASK_HEAD = False
    KEYPOINT_HEAD_CONV_CHANNELS = 128
    KEYPOINT_HEAD_NUM_CONVS = 4
    MINI_MASK_SHAPE = (28, 28)
    DETECTION_MAX_INSTANCES = 20
    # COCO AP ranks every detection: keep low-confidence persons (0.05, as torchvision and
    # detectron2 evaluate); pictures draw only those >= 0.5 (commands.predict.PICTURE_MIN_SCORE)
    DETECTION_MIN_CONFIDENCE = 0.05
    OPTIMIZER = "adamw"  # learns far faster than SGD from scratch
    LR_SCHEDULE = "cosine"


class CpuDemoConfig(CpuLite0Config):
    """The built-in demo: a light backbone at 256 px that learns the synthetic set on 2 CPU
    cores."""

    NAME = "demo"
    IMAGES_PER_GPU = 4
    STEPS_PER_EPOCH = 20  # short epochs: the demo's time budget stops between epochs
    VALIDATION_STEPS = 5
    IMAGE_MIN_DIM = 256
    IMAGE_MAX_DIM = 256
    MASK_HEAD_CHANNELS = 64
    KEYPOINT_ROIS_PER_IMAGE = 8
    RPN_TRAIN_ANCHORS_PER_IMAGE = 128
    PRE_NMS_LIMIT = 1000
    POST_NMS_ROIS_TRAINING = 200
    POST_NMS_ROIS_INFERENCE = 100
    TRAIN_ROIS_PER_IMAGE = 32
    MAX_GT_INSTANCES = 8
    LR_WARMUP_STEPS = 50


class CocoCpuConfig(CpuLite0Config):
    """Real COCO people on a CPU: ImageNet EfficientNet-Lite0 at 512 px, scale jitter, batch 2,
    AdamW at 1e-3 with cosine decay.

    The recipe of `mrcnn-kp train --config coco_cpu --pretrained imagenet` (docs/RESULTS.md
    gives its held-out keypoint AP and how the canvas, the jitter and the learning rate were
    chosen). 512 px keeps medium persons large enough for the 56 x 56 keypoint maps; the scale
    jitter (a log-uniform zoom with a random crop) keeps a few hundred training images from
    being memorised. The learning rate is the base's 1e-3 for the heads and 4+ stages; train's
    stage factor gives all layers 1e-4.
    """

    NAME = "coco_cpu"
    STEPS_PER_EPOCH = 100
    VALIDATION_STEPS = 10
    IMAGE_MIN_DIM = 512
    IMAGE_MAX_DIM = 512
    AUGMENT_SCALE_RANGE = (0.7, 1.4)
    KEYPOINT_ROIS_PER_IMAGE = 16
    PRE_NMS_LIMIT = 2000
    POST_NMS_ROIS_TRAINING = 500
    POST_NMS_ROIS_INFERENCE = 300
    TRAIN_ROIS_PER_IMAGE = 64
    MAX_GT_INSTANCES = 16
    DETECTION_NMS_THRESHOLD = 0.5
    LR_WARMUP_STEPS = 100


class TorchvisionKeypointConfig(Config):
    """torchvision's keypointrcnn_resnet50_fpn, for its converted COCO weights
    (`mrcnn-kp convert --from torchvision`): ResNet-50 v1.5 + FPN, 256-channel RPN, TwoMLPHead,
    8 x 512 keypoint head, no mask head, ImageNet mean/std, min side 800 / max side 1333 (on a
    1344 canvas), and torchvision's inference thresholds. The ResNet-50 backbone, the 800 px
    min side, the anchor scales, the RPN NMS and ROI counts, the box std devs and the keypoint
    head are the base's values.

    Box deltas keep our (dy, dx, log dh, log dw) order: the converter permutes torchvision's
    (dx, dy, dw, dh) outputs, and its coder weights become the std devs (RPN (1, 1, 1, 1), ROI
    1 / (10, 10, 5, 5)). RPN_ANCHOR_RATIOS are width / height, listed in torchvision's anchor
    order (its aspect ratios 0.5, 1, 2 are height / width).
    """

    NAME = "torchvision_kp"
    LAYOUT = "torchvision"
    IMAGES_PER_GPU = 1
    MEAN_PIXEL = (123.675, 116.28, 103.53)  # 255 x (0.485, 0.456, 0.406)
    PIXEL_STD = (58.395, 57.12, 57.375)  # 255 x (0.229, 0.224, 0.225)
    IMAGE_RESIZE_MODE = "torchvision"
    IMAGE_MAX_DIM = 1344  # the canvas (a multiple of 64) that holds 1333 x 800
    IMAGE_RESIZE_MAX_SIDE = 1333
    RPN_ANCHOR_RATIOS = (2.0, 1.0, 0.5)
    RPN_BBOX_STD_DEV = (1.0, 1.0, 1.0, 1.0)
    PRE_NMS_LIMIT = 1000  # per pyramid level (torchvision's pre_nms_top_n at test time)
    ROI_ALIGN_ALIGNED = False
    TRAIN_ROIS_PER_IMAGE = 512
    ROI_POSITIVE_RATIO = 0.25
    USE_MASK_HEAD = False
    KEYPOINT_DECODER = "exact"  # torchvision's global argmax of the resized map
    DETECTION_MIN_CONFIDENCE = 0.05
    DETECTION_NMS_THRESHOLD = 0.5


class MatterportConfig(Config):
    """matterport's Mask_RCNN, to run its weights (mask_rcnn_coco.h5, Mask_RCNN_Humanpose .h5)
    and reproduce its inference numbers (docs/MATTERPORT.md).

    Config's values are matterport's own defaults (1024 px square, 6000 anchors before NMS at
    0.7 -> 1000 ROIs, per-class NMS 0.3, 100 detections at >= 0.7); this preset adds
    ResNet-101, the 81 COCO classes of mask_rcnn_coco.h5, one image per batch (like its
    InferenceConfig) and every compatibility option on "matterport": its crop_and_resize ROI
    pooling and level rule, its proposal and detection layers in normalised coordinates, its
    skimage resize and mold_image, its integer box unmolding and mask pasting. Override
    NUM_CLASSES, BACKBONE or KEYPOINT_HEAD for other files, e.g. Mask_RCNN_Humanpose:
    MatterportConfig(NUM_CLASSES=2, KEYPOINT_HEAD="humanpose").
    """

    NAME = "matterport"
    IMAGES_PER_GPU = 1
    NUM_CLASSES = 81
    BACKBONE = "resnet101"
    ROI_ALIGN_MODE = "crop_and_resize"
    PROPOSAL_MODE = "matterport"
    DETECTION_MODE = "matterport"
    IMAGE_RESIZE_METHOD = "matterport"
    IMAGE_NORMALIZATION = "matterport"
    UNMOLD_MODE = "matterport"


# --config NAME -> the class; the order is the order the commands list them in.
PRESETS = {
    "default": Config,
    "tiny": TinyConfig,
    "cpu_demo": CpuDemoConfig,
    "coco_cpu": CocoCpuConfig,
    "torchvision": TorchvisionKeypointConfig,
    "matterport": MatterportConfig,
}
