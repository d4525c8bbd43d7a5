"""Inference post-processing: refined, thresholded, de-duplicated detections, then their
mask probabilities and decoded keypoints.

DetectionLayer (per image, batched, static shapes; matterport's DetectionLayer in pixels):

1. each ROI takes its most likely foreground class (argmax over classes 1..C-1; background is
   skipped) and that class's probability as its score;
2. the class-specific deltas times BBOX_STD_DEV refine the ROI, which is clipped to the image
   window (image_meta, the part of the molded image that holds the picture);
3. ROIs that are padding, score below DETECTION_MIN_CONFIDENCE, or have an empty box drop out;
4. per-class greedy NMS at DETECTION_NMS_THRESHOLD keeps the best DETECTION_MAX_INSTANCES
   in descending score order; the rest of the D slots are zero (class 0).

With config.DETECTION_MODE "matterport" it is matterport's refine_detections instead: the
argmax runs over every class, background included, and a ROI is kept when its class is not
background and its score >= DETECTION_MIN_CONFIDENCE (padding ROIs and empty boxes are not
dropped, as in matterport); the ROIs (the matterport ProposalLayer's, normalised) are refined
and clipped to the normalised window in matterport's (y1, x1, y2, x2) coordinates
(ops.matterport, no log-scale cap), and the boxes come out in those coordinates, zero padded
(proposals.NormalizedToPixels gives pixels). NMS runs once per class on the rows of that
class, in ROI order, as matterport's map over classes does (the same candidates for
TensorFlow's NMS kernel, so even tied scores pick the same boxes), and the union is ranked by
score, ties to the lower ROI index (matterport's top_k over its sorted keep set).

Outputs boxes [B, D, 4] pixel (x1, y1, x2, y2), class_ids [B, D] int32, scores [B, D],
num_detections [B] int32. The mask and keypoint heads then run on these D boxes only:
`DetectionMasks` picks each detection's class channel of the mask logits and applies the
sigmoid ([B, D, 28, 28]); `KeypointDecoder` turns [B, D, 56, 56, K] logits into (x, y, score)
per joint with ops.keypoints.decode_heatmaps (config.KEYPOINT_DECODER "window"), or
decode_heatmaps_exact ("exact": torchvision's global argmax, each map resized in full, padded
to the canvas side), for person detections (zeros elsewhere).
"""
import keras
from keras import ops

from mrcnn_kp.image_meta import parse_image_meta
from mrcnn_kp.model.proposals import config_from, gather_rows
from mrcnn_kp.ops import boxes as box_ops
from mrcnn_kp.ops import keypoints as keypoint_ops
from mrcnn_kp.ops import matterport as matterport_ops

PERSON_CLASS_ID = 1


def window_from_meta(image_meta):
    """image_meta [B, 12 + C] -> the picture's window as (x1, y1, x2, y2), [B, 4]."""
    y1x1y2x2 = ops.cast(parse_image_meta(image_meta)["window"], "float32")  # [B, 4]
    return ops.stack([y1x1y2x2[:, 1], y1x1y2x2[:, 0], y1x1y2x2[:, 3], y1x1y2x2[:, 2]], axis=-1)


def class_aware_nms(boxes, scores, class_ids, iou_threshold, max_output):
    """Greedy NMS within each class, for a batch: [B, N, 4], [B, N], [B, N] -> ([B, D], [B]).

    Rows scored -inf are never kept. Boxes of different classes are moved apart by an offset
    larger than any coordinate (torchvision's batched_nms trick), so one NMS pass per image
    only ever compares boxes of the same class. Returns the kept indices, -1 padded, in
    descending score order, and the number kept.
    """
    extent = ops.max(ops.abs(boxes)) + 1.0
    shifted = boxes + (ops.cast(class_ids, "float32") * extent)[..., None]
    return box_ops.nms_batched(shifted, scores, iou_threshold, max_output)


# torchvision's RoIHeads drops boxes narrower or lower than this (remove_small_boxes, 1e-2).
TORCHVISION_MIN_BOX_SIDE = 1e-2


def torchvision_keep(config, scores, boxes):
    """torchvision's postprocess_detections filter: score > DETECTION_MIN_CONFIDENCE (strict)
    and both sides >= TORCHVISION_MIN_BOX_SIDE. [B, N], [B, N, 4] -> bool [B, N]."""
    wide = boxes[..., 2] - boxes[..., 0] >= TORCHVISION_MIN_BOX_SIDE
    tall = boxes[..., 3] - boxes[..., 1] >= TORCHVISION_MIN_BOX_SIDE
    return ops.logical_and(scores > config.DETECTION_MIN_CONFIDENCE,
                           ops.logical_and(wide, tall))


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class DetectionLayer(keras.layers.Layer):
    """[rois [B, N, 4], roi_valid [B, N], class_probs [B, N, C], deltas [B, N, C, 4],
    image_meta [B, 12 + C]] -> boxes [B, D, 4], class_ids [B, D], scores [B, D],
    num_detections [B]."""

    def __init__(self, config, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.config = config_from(config)
        self.max_detections = int(self.config.DETECTION_MAX_INSTANCES)
        self.matterport = getattr(self.config, "DETECTION_MODE", "pixels") == "matterport"

    def call(self, rois, roi_valid, class_probs, deltas, image_meta):
        if self.matterport:
            return self._matterport_call(rois, class_probs, deltas, image_meta)
        config = self.config
        foreground = class_probs[:, :, 1:]  # [B, N, C-1]
        class_ids = ops.cast(ops.argmax(foreground, axis=-1), "int32") + 1  # [B, N]
        scores = ops.max(foreground, axis=-1)  # [B, N]
        index = ops.broadcast_to(class_ids[:, :, None, None], ops.shape(deltas)[:2] + (1, 4))
        class_deltas = ops.take_along_axis(deltas, index, axis=2)[:, :, 0]  # [B, N, 4]
        boxes = box_ops.decode_deltas(class_deltas, rois, config.BBOX_STD_DEV)  # [B, N, 4]
        boxes = box_ops.clip_boxes(boxes, window_from_meta(image_meta)[:, None, :])

        if getattr(config, "LAYOUT", "matterport") == "torchvision":
            keep = torchvision_keep(config, scores, boxes)
        else:
            keep = ops.logical_and(scores >= config.DETECTION_MIN_CONFIDENCE,
                                   box_ops.box_area(boxes) > 0.0)
        keep = ops.logical_and(ops.cast(roi_valid, "bool"), keep)
        ranked = ops.where(keep, scores, float("-inf"))  # dropped rows never survive NMS
        kept, count = class_aware_nms(boxes, ranked, class_ids, config.DETECTION_NMS_THRESHOLD,
                                      self.max_detections)  # [B, D], [B]
        kept = ops.cast(kept, "int32")
        count = ops.cast(count, "int32")
        valid = kept >= 0
        safe = ops.maximum(kept, 0)
        out_boxes = ops.where(valid[..., None], gather_rows(boxes, safe), 0.0)
        out_classes = ops.where(valid, ops.take_along_axis(class_ids, safe, axis=1), 0)
        out_scores = ops.where(valid, ops.take_along_axis(scores, safe, axis=1), 0.0)
        return out_boxes, out_classes, out_scores, count

    def _matterport_call(self, rois, class_probs, deltas, image_meta):
        """matterport's refine_detections (see the module docstring): normalised rois in,
        normalised (y1, x1, y2, x2) boxes out."""
        config = self.config
        shape = config.IMAGE_SHAPE
        class_ids = ops.cast(ops.argmax(class_probs, axis=-1), "int32")  # [B, N], 0 included
        scores = ops.max(class_probs, axis=-1)  # [B, N] probability of that class
        index = ops.broadcast_to(class_ids[:, :, None, None], ops.shape(deltas)[:2] + (1, 4))
        class_deltas = ops.take_along_axis(deltas, index, axis=2)[:, :, 0]  # [B, N, 4]
        std = ops.convert_to_tensor(config.BBOX_STD_DEV, "float32")
        boxes = matterport_ops.apply_box_deltas(ops.cast(rois, "float32"),
                                                class_deltas * std)  # [B, N, 4] (y1, x1, ...)
        window = matterport_ops.window_from_meta(parse_image_meta(image_meta)["window"], shape)
        boxes = matterport_ops.clip_boxes(boxes, window[:, None, :])

        keep = class_ids > 0
        if config.DETECTION_MIN_CONFIDENCE:  # matterport: 0 skips the filter
            keep = ops.logical_and(keep, scores >= config.DETECTION_MIN_CONFIDENCE)
        rows = ops.arange(ops.shape(scores)[1], dtype="int32")[None, None, :]  # [1, 1, N]
        selected = ops.zeros_like(keep)  # [B, N]
        for class_id in range(1, config.NUM_CLASSES):
            mine = ops.where(ops.logical_and(keep, ops.equal(class_ids, class_id)), scores,
                             float("-inf"))
            picked, _ = box_ops.nms_batched(boxes, mine, config.DETECTION_NMS_THRESHOLD,
                                            self.max_detections)  # [B, D], -1 padded
            hit = ops.any(ops.equal(ops.cast(picked, "int32")[:, :, None], rows), axis=1)
            selected = ops.logical_or(selected, hit)  # [B, N]
        ranked, kept = ops.top_k(ops.where(selected, scores, float("-inf")),
                                 self.max_detections, sorted=True)  # ties: lower index first
        valid = ranked > float("-inf")
        count = ops.sum(ops.cast(valid, "int32"), axis=1)
        safe = ops.cast(kept, "int32")
        out_boxes = ops.where(valid[..., None], gather_rows(boxes, safe), 0.0)
        out_classes = ops.where(valid, ops.take_along_axis(class_ids, safe, axis=1), 0)
        out_scores = ops.where(valid, ops.take_along_axis(scores, safe, axis=1), 0.0)
        return out_boxes, out_classes, out_scores, ops.cast(count, "int32")

    def compute_output_spec(self, rois, roi_valid, class_probs, deltas, image_meta):
        b, d = rois.shape[0], self.max_detections
        return (keras.KerasTensor((b, d, 4), "float32"), keras.KerasTensor((b, d), "int32"),
                keras.KerasTensor((b, d), "float32"), keras.KerasTensor((b,), "int32"))

    def get_config(self):
        base = super().get_config()
        base["config"] = self.config.to_dict()
        return base


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class DetectionMasks(keras.layers.Layer):
    """[mask_logits [B, D, h, w, C], class_ids [B, D]] -> probabilities [B, D, h, w] of each
    detection's class (0 for empty slots)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, mask_logits, class_ids):
        class_ids = ops.cast(class_ids, "int32")
        shape = ops.shape(mask_logits)
        index = ops.broadcast_to(class_ids[:, :, None, None, None], tuple(shape[:4]) + (1,))
        logits = ops.take_along_axis(mask_logits, index, axis=4)[..., 0]  # [B, D, h, w]
        return ops.where(class_ids[:, :, None, None] > 0, ops.sigmoid(logits), 0.0)

    def compute_output_shape(self, mask_logits_shape, class_ids_shape):
        return tuple(mask_logits_shape[:4])


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class KeypointDecoder(keras.layers.Layer):
    """[keypoint_logits [B, D, S, S, K], boxes [B, D, 4], class_ids [B, D]] -> [B, D, K, 3]
    (x, y, score) in molded pixels; zeros for slots that are not person detections.

    decoder: "window" (decode_heatmaps) or "exact" (decode_heatmaps_exact, which needs
    max_pixels, a bound on the boxes' sides: the canvas side)."""

    def __init__(self, person_class_id=PERSON_CLASS_ID, decoder="window", max_pixels=None,
                 **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if decoder not in ("window", "exact"):
            raise ValueError(f"unknown keypoint decoder {decoder!r}; choose window or exact")
        if decoder == "exact" and not max_pixels:
            raise ValueError("the exact keypoint decoder needs max_pixels (the canvas side)")
        self.person_class_id = int(person_class_id)
        self.decoder = decoder
        self.max_pixels = None if max_pixels is None else int(max_pixels)

    def call(self, keypoint_logits, boxes, class_ids):
        if self.decoder == "exact":
            keypoints = keypoint_ops.decode_heatmaps_exact(keypoint_logits, boxes,
                                                           self.max_pixels)  # [B, D, K, 3]
        else:
            keypoints = keypoint_ops.decode_heatmaps(keypoint_logits, boxes)  # [B, D, K, 3]
        person = ops.equal(ops.cast(class_ids, "int32"), self.person_class_id)
        return ops.where(person[:, :, None, None], keypoints, 0.0)

    def compute_output_shape(self, keypoint_logits_shape, boxes_shape, class_ids_shape):
        return tuple(keypoint_logits_shape[:2]) + (keypoint_logits_shape[-1], 3)

    def get_config(self):
        base = super().get_config()
        base["person_class_id"] = self.person_class_id
        base["decoder"] = self.decoder
        base["max_pixels"] = self.max_pixels
        return base


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class TrimToDetections(keras.layers.Layer):
    """[boxes [B, D, 4], class_ids [B, D], num_detections [B]] -> the first n slots of each,
    n = max(1, max over the batch of num_detections): a dynamic shape, TensorFlow only.

    Lets the mask and keypoint heads run on the detections that exist instead of all D slots
    (their cost is per ROI); `PadToSlots` restores the static [B, D, ...] layout afterwards.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)

    def call(self, boxes, class_ids, num_detections):
        count = ops.maximum(ops.max(ops.cast(num_detections, "int32")), 1)
        return boxes[:, :count], class_ids[:, :count]

    def compute_output_spec(self, boxes, class_ids, num_detections):
        return (keras.KerasTensor((boxes.shape[0], None, 4), boxes.dtype),
                keras.KerasTensor((boxes.shape[0], None), class_ids.dtype))


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class PadToSlots(keras.layers.Layer):
    """[B, n, ...] -> [B, slots, ...], zero padded after the n given rows."""

    def __init__(self, slots, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.slots = int(slots)

    def call(self, inputs):
        missing = self.slots - ops.shape(inputs)[1]
        padding = [[0, 0], [0, missing]] + [[0, 0]] * (len(inputs.shape) - 2)
        padded = ops.pad(inputs, padding)
        return ops.reshape(padded, (-1, self.slots) + tuple(inputs.shape[2:]))

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((inputs.shape[0], self.slots) + tuple(inputs.shape[2:]),
                                 inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config["slots"] = self.slots
        return config
