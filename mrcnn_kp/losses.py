"""The six training losses of Keypoint Mask R-CNN, as plain functions of tensors (keras.ops).

Every loss is a float32 scalar averaged over the entries that count (non-neutral anchors,
positive anchors, valid ROIs, positive ROIs, visible joints) and is exactly 0, never NaN, when
nothing counts: a batch without people still trains the RPN and the classifier, and does not
poison the weights. Padding and ignored entries are masked with `where` before any sum, so
garbage in a padded slot (even inf) cannot leak into the loss.

    name              inputs                                             averaged over
    rpn_class_loss    rpn_match [B, A], rpn_class_logits [B, A, 2]       anchors, match != 0
    rpn_bbox_loss     rpn_target_bbox [B, A, 4], rpn_match,              4 coords of the
                      rpn_bbox [B, A, 4]                                 positive anchors
    mrcnn_class_loss  target_class_ids [B, R], class_logits [B, R, C],   valid ROIs
                      roi_valid [B, R]
    mrcnn_bbox_loss   target_deltas [B, R, 4], target_class_ids,         4 coords of the
                      pred_deltas [B, R, C, 4]                           positive ROIs
    mrcnn_mask_loss   target_masks [B, P, h, w], target_class_ids [B, P], pixels of the
                      mask_logits [B, P, h, w, C]                        positive ROIs
    keypoint_loss     target_keypoints [B, P, K], keypoint_weights       valid (roi, joint)
                      [B, P, K], keypoint_logits [B, P, 56, 56, K]       pairs

Box losses are matterport's smooth L1 (Huber with delta 1) averaged over the coordinates of
the positives. The keypoint loss is the published one: a softmax over the 56 x 56 cells of each
joint's heatmap, cross-entropy with the one-hot target cell (index y * 56 + x), summed over
valid (roi, joint) pairs and divided by their count.

`LossLayer(name)` wraps any of them as a Keras layer for the functional training graph.
"""
import keras
from keras import ops

from mrcnn_kp.config import LOSS_NAMES


def _f32(x):
    return ops.cast(x, "float32")


def masked_mean(values, weights):
    """sum(values * weights) / sum(weights), 0 when the weights sum to 0 (never NaN).

    Entries with weight 0 are replaced by 0 before the sum, so a NaN or inf there is ignored.
    """
    values = _f32(values)
    weights = _f32(weights)
    total = ops.sum(ops.where(weights > 0, values * weights, 0.0))
    count = ops.sum(weights)
    return ops.where(count > 0, total / ops.maximum(count, 1e-12), 0.0)


def smooth_l1(y_true, y_pred):
    """Element-wise Huber loss with delta 1: 0.5 d^2 for |d| < 1, |d| - 0.5 otherwise."""
    diff = ops.abs(_f32(y_true) - _f32(y_pred))
    return ops.where(diff < 1.0, 0.5 * ops.square(diff), diff - 0.5)


def sparse_softmax_cross_entropy(labels, logits):
    """-log softmax(logits)[label] over the last axis: labels [...], logits [..., C] -> [...]."""
    log_probs = ops.log_softmax(_f32(logits), axis=-1)
    labels = ops.cast(labels, "int32")
    return -ops.squeeze(ops.take_along_axis(log_probs, labels[..., None], axis=-1), axis=-1)


# ------------------------------------------------------------------------------------ RPN
def rpn_class_loss(rpn_match, rpn_class_logits):
    """Anchor objectness: softmax cross-entropy over the non-neutral anchors.

    rpn_match: [B, A] int, 1 positive, -1 negative, 0 neutral (ignored).
    rpn_class_logits: [B, A, 2] (background, foreground) logits.
    """
    rpn_match = ops.cast(rpn_match, "int32")
    labels = ops.cast(ops.equal(rpn_match, 1), "int32")  # [B, A]
    loss = sparse_softmax_cross_entropy(labels, rpn_class_logits)  # [B, A]
    return masked_mean(loss, ops.not_equal(rpn_match, 0))


def rpn_bbox_loss(rpn_target_bbox, rpn_match, rpn_bbox):
    """Anchor box regression: smooth L1 over the 4 deltas of every positive anchor.

    rpn_target_bbox: [B, A, 4] target deltas (already divided by RPN_BBOX_STD_DEV), full size.
    rpn_match: [B, A]; only anchors with match == 1 count. rpn_bbox: [B, A, 4] predictions.
    """
    positive = ops.equal(ops.cast(rpn_match, "int32"), 1)  # [B, A]
    loss = smooth_l1(rpn_target_bbox, rpn_bbox)  # [B, A, 4]
    weights = ops.broadcast_to(_f32(positive)[..., None], ops.shape(loss))
    return masked_mean(loss, weights)


# ------------------------------------------------------------------------------------ heads
def mrcnn_class_loss(target_class_ids, class_logits, roi_valid):
    """ROI classification: softmax cross-entropy averaged over the valid (sampled) ROIs.

    target_class_ids: [B, R] int (0 background); class_logits: [B, R, C]; roi_valid: [B, R].
    """
    labels = ops.maximum(ops.cast(target_class_ids, "int32"), 0)
    loss = sparse_softmax_cross_entropy(labels, class_logits)  # [B, R]
    return masked_mean(loss, roi_valid)


def _take_class(values, class_ids, axis):
    """values [B, R, ..., C, ...] with the class axis at `axis` -> each ROI's class slice.

    class_ids [B, R] (negative ids count as 0); the class axis is dropped from the result.
    """
    index = ops.maximum(ops.cast(class_ids, "int32"), 0)  # [B, R]
    for _ in range(len(values.shape) - 2):
        index = ops.expand_dims(index, -1)  # [B, R, 1, ...]
    shape = list(ops.shape(values))
    shape[axis] = 1
    index = ops.broadcast_to(index, shape)
    return ops.squeeze(ops.take_along_axis(values, index, axis=axis), axis=axis)


def mrcnn_bbox_loss(target_deltas, target_class_ids, pred_deltas):
    """ROI box refinement: smooth L1 on the deltas of each positive ROI's target class.

    target_deltas: [B, R, 4] (divided by BBOX_STD_DEV); target_class_ids: [B, R] (> 0 positive);
    pred_deltas: [B, R, C, 4].
    """
    positive = ops.greater(ops.cast(target_class_ids, "int32"), 0)  # [B, R]
    pred = _take_class(_f32(pred_deltas), target_class_ids, axis=2)  # [B, R, 4]
    loss = smooth_l1(target_deltas, pred)  # [B, R, 4]
    weights = ops.broadcast_to(_f32(positive)[..., None], ops.shape(loss))
    return masked_mean(loss, weights)


def mrcnn_mask_loss(target_masks, target_class_ids, mask_logits):
    """Instance masks: binary cross-entropy on the target class's mask, positive ROIs only.

    target_masks: [B, P, h, w] 0/1; target_class_ids: [B, P] (> 0 positive);
    mask_logits: [B, P, h, w, C] pre-sigmoid (the `mrcnn_mask` layer's output).
    """
    positive = ops.greater(ops.cast(target_class_ids, "int32"), 0)  # [B, P]
    logits = _take_class(_f32(mask_logits), target_class_ids, axis=4)  # [B, P, h, w]
    targets = _f32(target_masks)
    # Stable BCE from logits: max(z, 0) - z * t + log(1 + exp(-|z|)).
    loss = ops.maximum(logits, 0.0) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))
    weights = ops.broadcast_to(_f32(positive)[:, :, None, None], ops.shape(loss))
    return masked_mean(loss, weights)


def keypoint_loss(target_keypoints, keypoint_weights, keypoint_logits):
    """Keypoints: softmax cross-entropy over the heatmap cells, per valid (roi, joint).

    target_keypoints: [B, P, K] int, the target cell y * W + x of each joint;
    keypoint_weights: [B, P, K] bool/float, 1 where the joint is labelled and inside its ROI;
    keypoint_logits: [B, P, H, W, K] channels-last heatmap logits.
    Summed over the valid pairs and divided by their count; 0 when there are none.
    """
    logits = _f32(keypoint_logits)
    b, p, h, w, k = ops.shape(logits)
    logits = ops.reshape(logits, (b, p, h * w, k))  # [B, P, H*W, K]
    logits = ops.transpose(logits, (0, 1, 3, 2))  # [B, P, K, H*W]
    labels = ops.clip(ops.cast(target_keypoints, "int32"), 0, h * w - 1)  # [B, P, K]
    loss = sparse_softmax_cross_entropy(labels, logits)  # [B, P, K]
    return masked_mean(loss, keypoint_weights)


LOSS_FUNCTIONS = {
    "rpn_class_loss": rpn_class_loss,
    "rpn_bbox_loss": rpn_bbox_loss,
    "mrcnn_class_loss": mrcnn_class_loss,
    "mrcnn_bbox_loss": mrcnn_bbox_loss,
    "mrcnn_mask_loss": mrcnn_mask_loss,
    "keypoint_loss": keypoint_loss,
}
assert tuple(LOSS_FUNCTIONS) == LOSS_NAMES


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class LossLayer(keras.layers.Layer):
    """One loss of LOSS_FUNCTIONS as a layer: call it with that function's arguments, as a list.

    Output: a float32 scalar (always 0 when enabled=False). The layer is named after the loss,
    so the training model's output dict and the metric names match mrcnn_kp.config.LOSS_NAMES.
    """

    def __init__(self, loss_name, enabled=True, **kwargs):
        if loss_name not in LOSS_FUNCTIONS:
            raise ValueError(f"unknown loss {loss_name!r}; choose one of {', '.join(LOSS_NAMES)}")
        kwargs.setdefault("name", loss_name)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.loss_name = loss_name
        self.enabled = bool(enabled)

    def call(self, inputs):
        if not self.enabled:  # e.g. the mask loss of a model without a mask head
            return ops.zeros((), "float32")
        return LOSS_FUNCTIONS[self.loss_name](*inputs)

    def compute_output_shape(self, input_shape):
        return ()

    def get_config(self):
        config = super().get_config()
        config.update(loss_name=self.loss_name, enabled=self.enabled)
        return config
