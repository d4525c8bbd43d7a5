"""Region Proposal Network: one small conv head shared by every pyramid level.

Per level (matterport's rpn_graph, the same three layer objects reused on P2..P6, so the weights
of matterport's nested `rpn_model` load into them by name):

    shared = rpn_conv_shared(P)          3x3 "same", RPN_CONV_CHANNELS (512), ReLU
    logits = rpn_class_raw(shared)       1x1, 2 * anchors per location (bg, fg per anchor)
    deltas = rpn_bbox_pred(shared)       1x1, 4 * anchors per location (dy, dx, log dh, log dw)

Each level's [B, H, W, A * n] output is reshaped to [B, H * W * A, n] (row, column, anchor, the
order of ops.anchors.generate_pyramid_anchors) and the levels are concatenated P2..P6:

    rpn_class_logits [B, NUM_ANCHORS, 2], rpn_probs [B, NUM_ANCHORS, 2] (softmax; column 1 is
    the foreground), rpn_bbox [B, NUM_ANCHORS, 4] (deltas / RPN_BBOX_STD_DEV).

config.LAYOUT "torchvision" (its RPNHead): rpn_conv_shared has as many channels as the pyramid
(256) and rpn_class_raw one sigmoid logit l per anchor. It is given out as the 2-way logits
(0, l), whose softmax is exactly (1 - sigmoid(l), sigmoid(l)), so the proposals, the losses and
the RPN targets work unchanged.
"""
import keras
from keras import layers, ops

@keras.saving.register_keras_serializable(package="mrcnn_kp")
class SigmoidLogitPair(keras.layers.Layer):
    """[..., 1] objectness logit l -> [..., 2] logits (0, l): softmax gives (1 - s, s), s =
    sigmoid(l), torchvision's one-logit RPN in our two-class form."""

    def call(self, logits):
        return ops.concatenate([ops.zeros_like(logits), logits], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (2,)


def _one_logit(config):
    return getattr(config, "LAYOUT", "matterport") == "torchvision"


def build_rpn_layers(config):
    """The three shared layers (conv, class, box), named as in matterport."""
    anchors = config.NUM_ANCHORS_PER_LOCATION
    channels = config.TOP_DOWN_PYRAMID_SIZE if _one_logit(config) else config.RPN_CONV_CHANNELS
    logits_per_anchor = 1 if _one_logit(config) else 2
    return (
        layers.Conv2D(channels, 3, padding="same", activation="relu",
                      strides=config.RPN_ANCHOR_STRIDE, name="rpn_conv_shared"),
        layers.Conv2D(logits_per_anchor * anchors, 1, name="rpn_class_raw"),
        layers.Conv2D(4 * anchors, 1, name="rpn_bbox_pred"),
    )


def build_rpn(pyramid, config):
    """[P2..P6] -> (rpn_class_logits [B, A, 2], rpn_probs [B, A, 2], rpn_bbox [B, A, 4])."""
    conv_shared, class_raw, bbox_pred = build_rpn_layers(config)
    level_logits, level_deltas = [], []
    for level, feature in zip(range(2, 7), pyramid):
        shared = conv_shared(feature)  # [B, H, W, RPN_CONV_CHANNELS]
        logits = class_raw(shared)  # [B, H, W, 2 * anchors]
        deltas = bbox_pred(shared)  # [B, H, W, 4 * anchors]
        if _one_logit(config):  # [B, H * W * anchors, 1] -> (0, l) pairs
            logits = SigmoidLogitPair(name=f"rpn_class_pair_p{level}")(
                layers.Reshape((-1, 1), name=f"rpn_class_raw_p{level}")(logits))
        level_logits.append(layers.Reshape((-1, 2), name=f"rpn_class_logits_p{level}")(logits))
        level_deltas.append(layers.Reshape((-1, 4), name=f"rpn_bbox_p{level}")(deltas))
    rpn_class_logits = layers.Concatenate(axis=1, name="rpn_class_logits")(level_logits)
    rpn_probs = layers.Softmax(axis=-1, name="rpn_probs", dtype="float32")(rpn_class_logits)
    rpn_bbox = layers.Concatenate(axis=1, name="rpn_bbox")(level_deltas)
    return rpn_class_logits, rpn_probs, rpn_bbox
