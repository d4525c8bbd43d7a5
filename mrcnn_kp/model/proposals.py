"""ProposalLayer: RPN scores and deltas -> at most N non-overlapping ROIs per image, padded.

Per image, all in one batched graph with static shapes (matterport's ProposalLayer, in pixels):

1. keep the PRE_NMS_LIMIT anchors with the highest foreground probability (top-k, sorted);
2. apply their deltas times RPN_BBOX_STD_DEV to the anchors and clip to the image;
3. greedy NMS at RPN_NMS_THRESHOLD keeps up to N boxes in descending score order
   (N = POST_NMS_ROIS_TRAINING or POST_NMS_ROIS_INFERENCE);
4. zero-pad to N rows, with a validity flag per row.

Outputs: rois [B, N, 4] pixel (x1, y1, x2, y2), scores [B, N] (foreground probability, 0 in
padding), valid [B, N] bool. Proposals are treated as constants (stop_gradient), as in
matterport and torchvision: the heads learn from them, they do not backpropagate into the RPN.

With config.PROPOSAL_MODE "matterport" the same steps run on matterport's normalised
(y1, x1, y2, x2) boxes (ops.matterport: anchors normalised from float64 pixels, deltas without a
log-scale cap, clip to [0, 1]), and the ROIs stay in those coordinates, padding rows zero, as
matterport's graph has them: the heads pool them as they are (PyramidRoiAlign
normalized_boxes) and the DetectionLayer refines them; `NormalizedToPixels` gives pixels (a
round trip through pixels can move a box by 1 float32 ulp, enough to change
tf.image.crop_and_resize's sample on a far edge).

`gather_rows` (rows of a [B, N, ...] tensor picked per image) is shared with the target and
detection layers.
"""
import keras
import numpy as np
from keras import ops

from mrcnn_kp.config import Config
from mrcnn_kp.image_meta import parse_image_meta
from mrcnn_kp.ops import anchors as anchor_ops
from mrcnn_kp.ops import boxes as box_ops
from mrcnn_kp.ops import matterport as matterport_ops


def gather_rows(values, indices):
    """values [B, N, ...], indices [B, M] int in [0, N) -> [B, M, ...] (values[b, indices[b]])."""
    indices = ops.cast(indices, "int32")
    shape = ops.shape(values)
    batch, rows = shape[0], shape[1]
    offsets = ops.arange(batch, dtype="int32")[:, None] * rows  # [B, 1]
    flat = ops.reshape(values, (-1,) + tuple(shape[2:]))  # [B*N, ...]
    picked = ops.take(flat, ops.reshape(indices + offsets, (-1,)), axis=0)  # [B*M, ...]
    return ops.reshape(picked, (batch, ops.shape(indices)[1]) + tuple(shape[2:]))


def config_from(value):
    """A Config from a Config or from its to_dict() (how layers get it back from get_config)."""
    return value if isinstance(value, Config) else Config.from_dict(value)


def image_window(config):
    """The whole molded image as an (x1, y1, x2, y2) clip window, float32 [4]."""
    height, width = config.IMAGE_SHAPE[:2]
    return ops.convert_to_tensor([0.0, 0.0, float(width), float(height)], "float32")


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class ProposalLayer(keras.layers.Layer):
    """[rpn_probs [B, A, 2], rpn_bbox [B, A, 4]] -> rois [B, N, 4], scores [B, N], valid [B, N].

    proposal_count: N (POST_NMS_ROIS_TRAINING or _INFERENCE). The anchors come from `config`
    (ops.anchors.generate_pyramid_anchors), in the RPN's row order.
    """

    def __init__(self, config, proposal_count, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.config = config_from(config)
        self.proposal_count = int(proposal_count)
        self.anchors = anchor_ops.generate_pyramid_anchors(self.config)  # [A, 4] numpy
        self.pre_nms_limit = min(int(self.config.PRE_NMS_LIMIT), len(self.anchors))
        self.matterport = getattr(self.config, "PROPOSAL_MODE", "pixels") == "matterport"
        if self.matterport:  # [A, 4] normalised (y1, x1, y2, x2)
            self.normalized_anchors = matterport_ops.normalized_anchors(self.config)
        self.per_level = getattr(self.config, "LAYOUT", "matterport") == "torchvision"
        if self.per_level:  # torchvision: PRE_NMS_LIMIT per pyramid level
            self.pre_nms_limit = sum(min(int(self.config.PRE_NMS_LIMIT), n)
                                     for n in anchor_ops.level_anchor_counts(self.config))
        if self.proposal_count > self.pre_nms_limit:
            raise ValueError(f"proposal_count {self.proposal_count} exceeds the "
                             f"{self.pre_nms_limit} boxes kept before NMS")

    def call(self, rpn_probs, rpn_bbox, image_meta=None, rpn_class_logits=None):
        if self.per_level:  # image_meta: clip to each image, its anchors only (torchvision)
            return per_level_proposals(self.config, self.anchors, rpn_probs, rpn_bbox,
                                       self.proposal_count, image_meta, rpn_class_logits)
        if self.matterport:
            return self._matterport_call(rpn_probs, rpn_bbox)
        config = self.config
        scores = rpn_probs[:, :, 1]  # [B, A] foreground probability
        scores, order = ops.top_k(scores, self.pre_nms_limit, sorted=True)  # [B, K]
        deltas = gather_rows(rpn_bbox, order)  # [B, K, 4]
        anchors = ops.take(ops.convert_to_tensor(self.anchors), order, axis=0)  # [B, K, 4]
        boxes = box_ops.decode_deltas(deltas, anchors, config.RPN_BBOX_STD_DEV)  # [B, K, 4]
        boxes = box_ops.clip_boxes(boxes, image_window(config))
        keep, _ = box_ops.nms_batched(boxes, scores, config.RPN_NMS_THRESHOLD,
                                      self.proposal_count)  # [B, N], -1 padded
        valid = ops.greater_equal(keep, 0)  # [B, N]
        safe = ops.maximum(keep, 0)
        rois = ops.where(valid[..., None], gather_rows(boxes, safe), 0.0)  # [B, N, 4]
        roi_scores = ops.where(valid, ops.take_along_axis(scores, safe, axis=1), 0.0)  # [B, N]
        return ops.stop_gradient(rois), ops.stop_gradient(roi_scores), valid

    def _matterport_call(self, rpn_probs, rpn_bbox):
        """matterport's ProposalLayer: normalised (y1, x1, y2, x2) ROIs (see the module)."""
        config = self.config
        scores = rpn_probs[:, :, 1]  # [B, A]
        scores, order = ops.top_k(scores, self.pre_nms_limit, sorted=True)  # [B, K]
        std = ops.convert_to_tensor(config.RPN_BBOX_STD_DEV, "float32")
        deltas = gather_rows(rpn_bbox, order) * std  # [B, K, 4]
        anchors = ops.take(ops.convert_to_tensor(self.normalized_anchors), order, axis=0)
        boxes = matterport_ops.apply_box_deltas(anchors, deltas)  # [B, K, 4] (y1, x1, y2, x2)
        boxes = matterport_ops.clip_boxes(
            boxes, ops.convert_to_tensor([0.0, 0.0, 1.0, 1.0], "float32"))
        # IoU does not care which axis comes first: the (x1, y1, x2, y2) NMS takes them as is.
        keep, _ = box_ops.nms_batched(boxes, scores, config.RPN_NMS_THRESHOLD,
                                      self.proposal_count)  # [B, N], -1 padded
        valid = ops.greater_equal(keep, 0)
        safe = ops.maximum(keep, 0)
        rois = ops.where(valid[..., None], gather_rows(boxes, safe), 0.0)  # [B, N, 4]
        roi_scores = ops.where(valid, ops.take_along_axis(scores, safe, axis=1), 0.0)
        return ops.stop_gradient(rois), ops.stop_gradient(roi_scores), valid

    def compute_output_spec(self, rpn_probs, rpn_bbox, image_meta=None, rpn_class_logits=None):
        batch, n = rpn_probs.shape[0], self.proposal_count
        return (keras.KerasTensor((batch, n, 4), "float32"),
                keras.KerasTensor((batch, n), "float32"),
                keras.KerasTensor((batch, n), "bool"))

    def get_config(self):
        base = super().get_config()
        base.update(config=self.config.to_dict(), proposal_count=self.proposal_count)
        return base


# Boxes narrower or lower than this are dropped before NMS (torchvision's RPN min_size).
PER_LEVEL_MIN_SIZE = 1e-3


def torchvision_image_anchors(config, anchors, padded):
    """torchvision's anchors for images of padded size `padded` [B, 2] (x, y), from ours.

    torchvision places a level's anchors every image_size // grid pixels, grid being its map
    size; that is the level's stride except where a map size is odd before P6's stride-2
    pooling (800 px: P6 has 13 rows, every 61 px). -> anchors [B, A, 4] (ours moved there) and
    inside [B, A] (the anchor's cell exists in torchvision's map).
    """
    strides = np.concatenate([np.full(n, float(s), np.float32) for n, s in zip(
        anchor_ops.level_anchor_counts(config), config.BACKBONE_STRIDES)])  # [A]
    anchors = np.asarray(anchors, np.float32)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2.0  # [A, 2] (x, y)
    cells = np.round(centres / strides[:, None])  # [A, 2] (column, row)
    padded = ops.cast(padded, "float32")
    grid = ops.ceil(padded[:, None, :] / strides[None, :, None])  # [B, A, 2] map size
    step = ops.floor(padded[:, None, :] / grid)  # [B, A, 2] torchvision's image_size // grid
    shift = ops.convert_to_tensor(cells, "float32")[None] * step - centres[None]  # [B, A, 2]
    moved = ops.convert_to_tensor(anchors)[None] + ops.concatenate([shift, shift], axis=-1)
    inside = ops.all(ops.convert_to_tensor(cells, "float32")[None] < grid, axis=-1)
    return moved, inside


def per_level_proposals(config, anchors, rpn_probs, rpn_bbox, proposal_count, image_meta=None,
                        rpn_class_logits=None):
    """torchvision's RPN filter_proposals (config.LAYOUT "torchvision"), batched and static.

    Anchors are ranked by their objectness logit when rpn_class_logits [B, A, 2] is given
    (torchvision's top-k and NMS order): the probability sigmoid(l) is exactly 1.0 in float32
    for every l above ~17, so confident anchors would otherwise tie and be ranked by index.
    Per pyramid level the min(PRE_NMS_LIMIT, level size) best anchors; their deltas times
    RPN_BBOX_STD_DEV applied, boxes clipped to the image, sides below PER_LEVEL_MIN_SIZE
    dropped; NMS at RPN_NMS_THRESHOLD within each level (levels moved apart by an offset, the
    batched_nms trick); the best proposal_count kept in descending score order.
    With image_meta, "the image" is each image's window (top-left in the canvas) rather than the
    canvas, and only the anchors of torchvision's grid for it (its size padded to 32) compete.
    -> rois [B, N, 4], scores [B, N], valid [B, N], as ProposalLayer.
    """
    scores = rpn_probs[:, :, 1]  # [B, A] foreground probability
    rank = scores if rpn_class_logits is None else \
        rpn_class_logits[:, :, 1] - rpn_class_logits[:, :, 0]  # [B, A] logit: same order
    window = image_window(config)  # [4] (x1, y1, x2, y2)
    image_anchors = None
    if image_meta is not None:
        yx = ops.cast(parse_image_meta(image_meta)["window"], "float32")  # [B, 4] y1 x1 y2 x2
        window = ops.stack([yx[:, 1], yx[:, 0], yx[:, 3], yx[:, 2]], axis=-1)[:, None, :]
        padded = ops.ceil(window[:, 0, 2:4] / 32.0) * 32.0  # [B, 2] (x, y) torchvision's size
        image_anchors, inside = torchvision_image_anchors(config, anchors, padded)
        rank = ops.where(inside, rank, float("-inf"))  # cells torchvision's maps lack
    picked_ranks, picked_rows, level_ids = [], [], []
    start = 0
    for level, count in enumerate(anchor_ops.level_anchor_counts(config)):
        k = min(int(config.PRE_NMS_LIMIT), count)
        level_ranks, rows = ops.top_k(rank[:, start:start + count], k, sorted=True)
        picked_ranks.append(level_ranks)
        picked_rows.append(rows + start)
        level_ids += [level] * k
        start += count
    rank = ops.concatenate(picked_ranks, axis=1)  # [B, K]
    order = ops.concatenate(picked_rows, axis=1)  # [B, K]
    scores = ops.take_along_axis(scores, order, axis=1)  # [B, K] their probabilities
    deltas = gather_rows(rpn_bbox, order)  # [B, K, 4]
    if image_anchors is None:
        picked_anchors = ops.take(ops.convert_to_tensor(anchors), order, axis=0)  # [B, K, 4]
    else:
        picked_anchors = gather_rows(image_anchors, order)
    boxes = box_ops.decode_deltas(deltas, picked_anchors, config.RPN_BBOX_STD_DEV)
    boxes = box_ops.clip_boxes(boxes, window)  # [B, K, 4]
    big = ops.logical_and(boxes[..., 2] - boxes[..., 0] >= PER_LEVEL_MIN_SIZE,
                          boxes[..., 3] - boxes[..., 1] >= PER_LEVEL_MIN_SIZE)
    ranked = ops.where(big, rank, float("-inf"))
    offset = float(max(config.IMAGE_SHAPE[:2])) + 1.0  # clipped boxes never reach it
    shift = ops.convert_to_tensor([float(v) * offset for v in level_ids], "float32")  # [K]
    keep, _ = box_ops.nms_batched(boxes + shift[None, :, None], ranked,
                                  config.RPN_NMS_THRESHOLD, proposal_count)  # [B, N]
    valid = ops.greater_equal(keep, 0)
    safe = ops.maximum(keep, 0)
    rois = ops.where(valid[..., None], gather_rows(boxes, safe), 0.0)  # [B, N, 4]
    roi_scores = ops.where(valid, ops.take_along_axis(scores, safe, axis=1), 0.0)  # [B, N]
    return ops.stop_gradient(rois), ops.stop_gradient(roi_scores), valid


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class NormalizedToPixels(keras.layers.Layer):
    """[boxes [B, N, 4] matterport-normalised (y1, x1, y2, x2), keep [B, N] (bool, or class
    ids: > 0 keeps)] -> pixel (x1, y1, x2, y2) [B, N, 4], unrounded (ops.matterport.to_pixels),
    0 where keep is false."""

    def __init__(self, image_shape, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.image_shape = tuple(int(v) for v in image_shape)

    def call(self, boxes, keep):
        pixels = matterport_ops.to_pixels(boxes, self.image_shape)
        keep = ops.cast(keep, "int32") > 0
        return ops.where(keep[..., None], pixels, 0.0)

    def compute_output_spec(self, boxes, keep):
        return keras.KerasTensor(tuple(boxes.shape), "float32")

    def get_config(self):
        base = super().get_config()
        base["image_shape"] = self.image_shape
        return base
