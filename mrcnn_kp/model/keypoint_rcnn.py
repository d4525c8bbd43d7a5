"""The Keypoint Mask R-CNN models: one set of layers, a training graph and an inference graph.

    image [B, S, S, 3] raw 0..255 -> normalize_image -> backbone C2..C5 -> FPN P2..P6 -> RPN
      training:  ProposalLayer (POST_NMS_ROIS_TRAINING) -> DetectionTargetLayer (sampled ROIs
                 and targets) -> box head on R ROIs, mask and keypoint heads on the positive
                 slots -> the six losses of mrcnn_kp.config.LOSS_NAMES
      inference: ProposalLayer (POST_NMS_ROIS_INFERENCE) -> box head -> DetectionLayer (D boxes)
                 -> mask and keypoint heads on the D boxes -> masks, decoded keypoints

`build_models(config)` builds both graphs from the same layer objects (the backbone, FPN and RPN
are even the same graph nodes), so they share every weight; `build_training_model(config)` and
`build_inference_model(config)` build one of them. Inputs and outputs follow
docs/DESIGN.md. Weights move between separately built models by layer name
(mrcnn_kp.weights), and every layer name follows docs/DESIGN.md.

The training model is a `KeypointRCNNTrainingModel`: `compile(optimizer)` (no loss argument)
then `fit(batches)` where each batch is the input dict; its `compute_loss` is the sum of
LOSS_WEIGHTS[name] * loss (+ any layer regularisation losses), and each loss is a metric of the
same name, on the TensorFlow and the JAX backends.
"""
import collections

import keras
from keras import ops

from mrcnn_kp.config import LOSS_NAMES
from mrcnn_kp.losses import LossLayer
from mrcnn_kp.model.backbone import build_backbone
from mrcnn_kp.model.detection import (DetectionLayer, DetectionMasks, KeypointDecoder,
                                      PadToSlots, TrimToDetections)
from mrcnn_kp.model.fpn import build_fpn
from mrcnn_kp.model.heads import FirstRois, build_heads
from mrcnn_kp.model.proposals import NormalizedToPixels, ProposalLayer
from mrcnn_kp.model.roi_targets import DetectionTargetLayer, keypoint_slots, positive_slots
from mrcnn_kp.model.rpn import build_rpn
from mrcnn_kp.model.torchvision_layout import valid_region_fn
from mrcnn_kp.ops.backend import loss_per_replica

INFERENCE_OUTPUTS = ("boxes", "class_ids", "scores", "masks", "keypoints", "num_detections")

Models = collections.namedtuple("Models", ["training", "inference"])


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class NormalizeImage(keras.layers.Layer):
    """Raw 0..255 RGB [B, S, S, 3] -> (x - MEAN_PIXEL) / PIXEL_STD, so exported models take
    plain images (padding 0 becomes -MEAN / STD, as in matterport).

    float64=True (config.IMAGE_NORMALIZATION "matterport") computes in float64 and rounds once
    to float32, as matterport's mold_image (`image.astype(float32) - MEAN_PIXEL` is float64,
    cast when fed); TensorFlow only: JAX without x64 keeps float32 (1 ulp apart in places).
    """

    def __init__(self, mean, std, float64=False, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.float64 = bool(float64)

    def call(self, images):
        if self.float64 and keras.backend.backend() == "tensorflow":
            mean = ops.convert_to_tensor(self.mean, "float64")
            std = ops.convert_to_tensor(self.std, "float64")
            exact = (ops.cast(images, "float64") - mean) / std
            return ops.cast(exact, self.compute_dtype)
        mean = ops.convert_to_tensor(self.mean, self.compute_dtype)
        std = ops.convert_to_tensor(self.std, self.compute_dtype)
        return (ops.cast(images, self.compute_dtype) - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mean=self.mean, std=self.std, float64=self.float64)
        return config


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class TargetStats(keras.layers.Layer):
    """Diagnostics: mean positive ROIs and mean trained joints per image, float32 scalars."""

    def call(self, target_class_ids, keypoint_weights):
        positives = ops.sum(ops.cast(ops.greater(target_class_ids, 0), "float32"), axis=1)
        joints = ops.sum(ops.cast(keypoint_weights, "float32"), axis=(1, 2))
        return ops.mean(positives), ops.mean(joints)

    def compute_output_spec(self, target_class_ids, keypoint_weights):
        return keras.KerasTensor((), "float32"), keras.KerasTensor((), "float32")


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class KeypointRCNNTrainingModel(keras.Model):
    """Functional training model whose outputs are the losses; see the module docstring.

    loss_weights: {loss name: weight} (config.LOSS_WEIGHTS).
    """

    def __init__(self, *args, loss_weights=None, **kwargs):
        super().__init__(*args, **kwargs)
        weights = dict(loss_weights or {name: 1.0 for name in LOSS_NAMES})
        missing = set(LOSS_NAMES) - set(weights)
        if missing:
            raise ValueError(f"loss_weights lacks {', '.join(sorted(missing))}")
        self.loss_weights = {name: float(weights[name]) for name in LOSS_NAMES}
        self.loss_trackers = [keras.metrics.Mean(name=name) for name in LOSS_NAMES]

    def compile(self, *args, **kwargs):
        """keras.Model.compile, then build the optimizer's slots for the trainable weights.

        Without a distribution strategy the TensorFlow trainer builds the optimizer while
        tracing the first train step, which creates variables inside the trace and makes
        tf.function trace the whole step a second time (a minute of CPU for this model).
        Trainable flags must therefore be set before compile (as Keras requires anyway).
        """
        super().compile(*args, **kwargs)
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total = ops.zeros((), "float32")
        for name in LOSS_NAMES:
            if self.loss_weights[name]:
                total = total + self.loss_weights[name] * ops.cast(y_pred[name], "float32")
        for extra in self.losses:  # e.g. kernel regularisers
            total = total + ops.cast(ops.sum(extra), "float32")
        return loss_per_replica(total)  # tf.distribute sums the replicas' gradients

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        for tracker in self.loss_trackers:
            tracker.update_state(y_pred[tracker.name])
        return self.get_metrics_result()

    @property
    def metrics(self):
        own = [m for m in super().metrics if all(m is not t for t in self.loss_trackers)]
        return own + list(self.loss_trackers)

    def get_config(self):
        config = super().get_config()
        config["loss_weights"] = dict(self.loss_weights)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        loss_weights = config.pop("loss_weights", None)
        model = super().from_config(config, custom_objects=custom_objects)
        if loss_weights is not None:
            model.loss_weights = {name: float(loss_weights[name]) for name in LOSS_NAMES}
        return model


# ------------------------------------------------------------------------------ inputs
def build_inputs(config):
    """The training batch dict of docs/DESIGN.md as keras.Input tensors (names = keys)."""
    g, k = config.MAX_GT_INSTANCES, config.NUM_KEYPOINTS
    mask_side = tuple(config.MINI_MASK_SHAPE) if config.USE_MINI_MASK \
        else tuple(config.IMAGE_SHAPE[:2])
    specs = {
        "input_image": (tuple(config.IMAGE_SHAPE), "float32"),
        "input_image_meta": ((config.IMAGE_META_SIZE,), "float32"),
        "input_rpn_match": ((config.NUM_ANCHORS,), "int32"),
        "input_rpn_bbox": ((config.NUM_ANCHORS, 4), "float32"),
        "input_gt_class_ids": ((g,), "int32"),
        "input_gt_boxes": ((g, 4), "float32"),
        "input_gt_masks": ((g,) + mask_side, "float32"),
        "input_gt_keypoints": ((g, k, 3), "float32"),
    }
    return {name: keras.Input(shape=shape, dtype=dtype, name=name)
            for name, (shape, dtype) in specs.items()}


# ------------------------------------------------------------------------------ graphs
def _training_outputs(config, inputs, trunk, heads):
    box_head, mask_head, keypoint_head = heads
    feature_maps = trunk["pyramid"][:4]  # P2..P5
    rpn_rois, _, rpn_valid = ProposalLayer(config, config.POST_NMS_ROIS_TRAINING, name="ROI")(
        trunk["rpn_probs"], trunk["rpn_bbox"], **trunk["proposal_inputs"])  # [B, N, 4], [B, N]
    if _matterport_boxes(config):  # the targets are matched in pixels
        rpn_rois = NormalizedToPixels(config.IMAGE_SHAPE, name="rpn_rois_pixels")(
            rpn_rois, rpn_valid)
    (rois, roi_valid, target_class_ids, target_deltas, target_masks, target_keypoints,
     keypoint_weights) = DetectionTargetLayer(config, name="roi_targets")(
        rpn_rois, rpn_valid, inputs["input_gt_class_ids"], inputs["input_gt_boxes"],
        inputs["input_gt_masks"], inputs["input_gt_keypoints"])
    head_inputs = trunk["head_inputs"]
    class_logits, _, bbox_deltas = box_head(rois, feature_maps,
                                            **head_inputs)  # [B, R, C], [B, R, C, 4]

    positive_rois = FirstRois(positive_slots(config), name="positive_rois")(rois)  # [B, P, 4]
    positive_ids = FirstRois(positive_slots(config), name="positive_class_ids")(target_class_ids)
    if mask_head is not None:
        mask_logits = mask_head(positive_rois, feature_maps, **head_inputs)  # [B, P, 28, 28, C]
        mask_loss = LossLayer("mrcnn_mask_loss")([target_masks, positive_ids, mask_logits])
    else:
        mask_loss = LossLayer("mrcnn_mask_loss", enabled=False)([positive_ids])
    keypoint_rois = FirstRois(keypoint_slots(config), name="keypoint_rois")(rois)  # [B, Pk, 4]
    keypoint_logits = keypoint_head(keypoint_rois, feature_maps,
                                    **head_inputs)  # [B, Pk, 56, 56, K]

    positive_rois_per_image, joints_per_image = TargetStats(name="target_stats")(
        target_class_ids, keypoint_weights)
    return {
        "rpn_class_loss": LossLayer("rpn_class_loss")(
            [inputs["input_rpn_match"], trunk["rpn_class_logits"]]),
        "rpn_bbox_loss": LossLayer("rpn_bbox_loss")(
            [inputs["input_rpn_bbox"], inputs["input_rpn_match"], trunk["rpn_bbox"]]),
        "mrcnn_class_loss": LossLayer("mrcnn_class_loss")(
            [target_class_ids, class_logits, roi_valid]),
        "mrcnn_bbox_loss": LossLayer("mrcnn_bbox_loss")(
            [target_deltas, target_class_ids, bbox_deltas]),
        "mrcnn_mask_loss": mask_loss,
        "keypoint_loss": LossLayer("keypoint_loss")(
            [target_keypoints, keypoint_weights, keypoint_logits]),
        "positive_rois": positive_rois_per_image,
        "trained_joints": joints_per_image,
    }


def _inference_outputs(config, inputs, trunk, heads, debug, dynamic_heads):
    box_head, mask_head, keypoint_head = heads
    feature_maps = trunk["pyramid"][:4]
    rpn_rois, rpn_scores, rpn_valid = ProposalLayer(
        config, config.POST_NMS_ROIS_INFERENCE, name="ROI")(
        trunk["rpn_probs"], trunk["rpn_bbox"], **trunk["proposal_inputs"])
    # matterport's modes: ROIs and detections in its normalised (y1, x1, y2, x2), as its graph
    # has them (pooled as they are); the pixels of the contract are made for the outputs.
    normalized = _matterport_boxes(config)
    head_inputs = trunk["head_inputs"]
    _, class_probs, bbox_deltas = box_head(rpn_rois, feature_maps, normalized=normalized,
                                           **head_inputs)
    boxes, class_ids, scores, num_detections = DetectionLayer(config, name="mrcnn_detection")(
        rpn_rois, rpn_valid, class_probs, bbox_deltas, inputs["input_image_meta"])
    normalized_boxes = boxes if normalized else None
    if normalized:
        boxes = NormalizedToPixels(config.IMAGE_SHAPE, name="mrcnn_detection_pixels")(
            normalized_boxes, class_ids)  # [B, D, 4] pixels, 0 in empty slots
    head_boxes, head_class_ids = boxes, class_ids  # [B, D, 4], [B, D]
    if dynamic_heads:  # [B, n, 4], [B, n]: only the slots that hold a detection
        head_boxes, head_class_ids = TrimToDetections(name="mrcnn_detection_trim")(
            boxes, class_ids, num_detections)

    def slots(tensor, name):
        return PadToSlots(config.DETECTION_MAX_INSTANCES, name=name)(tensor) \
            if dynamic_heads else tensor

    pooled_boxes = head_boxes  # what the heads pool: pixels, or matterport's normalised boxes
    if normalized:
        pooled_boxes = normalized_boxes
        if dynamic_heads:
            pooled_boxes, _ = TrimToDetections(name="mrcnn_detection_trim_normalized")(
                normalized_boxes, class_ids, num_detections)
    keypoint_logits = keypoint_head(pooled_boxes, feature_maps, normalized=normalized,
                                    **head_inputs)  # [B, D, 56, 56, K]
    keypoints = KeypointDecoder(
        decoder=config.KEYPOINT_DECODER, max_pixels=max(config.IMAGE_SHAPE[:2]),
        name="mrcnn_keypoints")(keypoint_logits, head_boxes, head_class_ids)  # [B, D, K, 3]
    outputs = {
        "boxes": boxes,  # [B, D, 4]
        "class_ids": class_ids,  # [B, D]
        "scores": scores,  # [B, D]
        "keypoints": slots(keypoints, "mrcnn_keypoints_slots"),  # [B, D, K, 3]
        "num_detections": num_detections,  # [B]
    }
    if mask_head is not None:
        masks = DetectionMasks(name="mrcnn_masks")(
            mask_head(pooled_boxes, feature_maps, normalized=normalized, **head_inputs),
            head_class_ids)  # [B, D, 28, 28]
        outputs["masks"] = slots(masks, "mrcnn_masks_slots")
    if normalized:  # [B, D, 4] matterport's detections[..., :4], for its unmold_detections
        outputs["normalized_boxes"] = normalized_boxes
    if debug:
        outputs.update({
            "rpn_class_logits": trunk["rpn_class_logits"], "rpn_probs": trunk["rpn_probs"],
            "rpn_bbox": trunk["rpn_bbox"], "rpn_rois": rpn_rois, "rpn_scores": rpn_scores,
            "rpn_valid": rpn_valid, "mrcnn_class": class_probs, "mrcnn_bbox": bbox_deltas,
            "keypoint_logits": slots(keypoint_logits, "keypoint_logits_slots"),
        })
        outputs.update({f"P{level}": p for level, p in zip(range(2, 7), trunk["pyramid"])})
    return {name: outputs[name] for name in sorted(outputs, key=_output_order)}


def _matterport_boxes(config):
    """True when the proposal and detection layers run in matterport's normalised boxes."""
    return getattr(config, "PROPOSAL_MODE", "pixels") == "matterport"


def _output_order(name):
    return (INFERENCE_OUTPUTS.index(name), "") if name in INFERENCE_OUTPUTS else (99, name)


def build_trunk(image, config, image_meta=None):
    """image [B, S, S, 3] raw -> {"pyramid": [P2..P6], "rpn_class_logits", "rpn_probs",
    "rpn_bbox", "proposal_inputs", "head_inputs"}: the part both graphs share.

    With LAYOUT "torchvision" the proposals are ranked by the RPN's logits, and with an
    image_meta the maps are zeroed beyond each image's torchvision-padded size
    (torchvision_layout.TorchvisionValidRegion), the proposals get the image_meta (clipping to the
    image, anchors of that size only), and so do the heads' ROIAlign (each image's maps end
    at that size: head_inputs)."""
    normalized = NormalizeImage(
        config.MEAN_PIXEL, config.PIXEL_STD,
        float64=getattr(config, "IMAGE_NORMALIZATION", "float32") == "matterport",
        name="normalize_image")(image)
    valid = valid_region_fn(config, image_meta)
    normalized = valid(normalized, "normalize_image_valid", 1)
    pyramid = build_fpn(build_backbone(normalized, config, valid), config, valid)
    rpn_class_logits, rpn_probs, rpn_bbox = build_rpn(pyramid, config)
    torchvision = getattr(config, "LAYOUT", "matterport") == "torchvision"
    proposal_inputs = {}
    if torchvision:  # ranked by the objectness logit, as torchvision ranks them
        proposal_inputs["rpn_class_logits"] = rpn_class_logits
        if image_meta is not None:
            proposal_inputs["image_meta"] = image_meta
    # the heads sample each image's maps up to its own border, as torchvision's ROIAlign does
    head_inputs = {"image_meta": image_meta} if torchvision and image_meta is not None else {}
    return {"pyramid": pyramid, "rpn_class_logits": rpn_class_logits, "rpn_probs": rpn_probs,
            "rpn_bbox": rpn_bbox, "proposal_inputs": proposal_inputs, "head_inputs": head_inputs}


def build_models(config, training=True, inference=True, debug=False, dynamic_heads=False):
    """Models(training, inference) built from one set of layers (either may be None).

    debug: the inference model also outputs the RPN tensors, the proposals (rpn_rois,
    rpn_scores, rpn_valid), the box head outputs on them and the pyramid P2..P6, for the
    inspect_model notebook.
    dynamic_heads: the inference model runs the mask and keypoint heads only on the slots that
    hold a detection (the most of any image in the batch) instead of all
    DETECTION_MAX_INSTANCES, then pads back: the same outputs, and a keypoint head whose cost
    follows the number of persons (about 7 GFLOPs per person with the published head). A
    dynamic shape inside the graph: TensorFlow backend without XLA only; exporters that need
    static shapes keep the default.
    """
    if dynamic_heads and keras.backend.backend() != "tensorflow":
        raise ValueError(f"dynamic_heads needs the TensorFlow backend (JAX compiles static "
                         f"shapes only); running on {keras.backend.backend()!r}")
    inputs = build_inputs(config)
    trunk = build_trunk(inputs["input_image"], config, inputs["input_image_meta"])
    heads = build_heads(config)
    training_model = inference_model = None
    if training:
        training_model = KeypointRCNNTrainingModel(
            inputs=inputs, outputs=_training_outputs(config, inputs, trunk, heads),
            loss_weights=config.LOSS_WEIGHTS, name=f"{config.NAME}_training")
    if inference:
        inference_inputs = {name: inputs[name] for name in ("input_image", "input_image_meta")}
        inference_model = keras.Model(
            inputs=inference_inputs,
            outputs=_inference_outputs(config, inputs, trunk, heads, debug, dynamic_heads),
            name=f"{config.NAME}_inference")
    return Models(training_model, inference_model)


def build_training_model(config):
    """The training model (inputs: the batch dict; outputs: the six losses + diagnostics)."""
    return build_models(config, inference=False).training


def build_inference_model(config, debug=False, dynamic_heads=False):
    """The inference model ({input_image, input_image_meta} -> boxes, class_ids, scores,
    masks, keypoints, num_detections; more with debug=True). See build_models for
    dynamic_heads."""
    return build_models(config, training=False, debug=debug,
                        dynamic_heads=dynamic_heads).inference
