"""Which layers train: matterport's `layers=` presets ("heads", "3+", "4+", "5+", "all") or any
regex over layer names, applied with `set_trainable`.

    set_trainable(model, "heads", config)   # -> ["fpn_c5p5", ..., "rpn_conv_shared", "mrcnn_..."]

Layer names follow docs/DESIGN.md: heads are `fpn_*`, `rpn_*`, `mrcnn_*`; backbone stages
come from `mrcnn_kp.model.backbone.backbone_stage_regex` (ResNet `res{N}*`/`bn{N}*`,
EfficientNet-Lite0 `lite0_stage{N}_*`). Batch-norm layers stay frozen (not trainable, so gamma,
beta and the moving statistics never change) unless config.TRAIN_BN.
"""
import re

import keras

HEADS_REGEX = r"(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)"
PRESETS = ("heads", "3+", "4+", "5+", "all")


def layers_regex(layers, config):
    """The regex (for re.fullmatch over layer names) that a `layers=` value stands for."""
    if layers == "heads":
        return HEADS_REGEX
    if layers == "all":
        return r".*"
    if layers in ("3+", "4+", "5+"):
        return f"{_backbone_regex(config, int(layers[0]))}|{HEADS_REGEX}"
    try:
        re.compile(layers)
    except (re.error, TypeError) as exc:
        raise ValueError(f"layers must be one of {', '.join(PRESETS)} or a regex over layer "
                         f"names, got {layers!r} ({exc})") from None
    return layers


def _backbone_regex(config, stage):
    try:
        from mrcnn_kp.model.backbone import backbone_stage_regex
    except ImportError:  # the backbone module is optional for stand-in models
        backbone_stage_regex = None
    if backbone_stage_regex is not None:
        return backbone_stage_regex(config, stage)
    if config.BACKBONE == "efficientnet_lite0":
        return "|".join(rf"(lite0\_stage{s}\_.*)" for s in range(stage, 6))
    return "|".join(rf"(res{s}.*)|(bn{s}.*)" for s in range(stage, 6))


def is_batch_norm(layer):
    while isinstance(layer, keras.layers.Wrapper):  # TimeDistributed(BatchNormalization)
        layer = layer.layer
    return isinstance(layer, keras.layers.BatchNormalization)


def _sublayers(layer):
    """Direct children of a container (nested Model, TimeDistributed, composite layer)."""
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    if isinstance(layer, keras.layers.Wrapper):
        return []  # a wrapper trains as one unit under its own name
    return list(getattr(layer, "_layers", []) or [])


def set_trainable(model, layers, config):
    """Make exactly the layers whose name matches `layers` trainable; freeze the rest.

    A container (nested model or composite layer) whose own name matches trains as a whole;
    otherwise its children are matched one by one. Batch-norm layers stay frozen unless
    config.TRAIN_BN. Returns the names of the layers that now hold trainable weights, in model
    order (children of a partially trained container by their own names).

    Call `compile` after this: Keras collects trainable weights when it builds the step.
    """
    pattern = re.compile(layers_regex(layers, config))
    trained = []

    def visit(layer, selected):
        selected = selected or pattern.fullmatch(layer.name) is not None
        children = _sublayers(layer)
        if children:
            layer.trainable = True  # weights of a frozen container are hidden, so keep it open
            for child in children:
                visit(child, selected)
            return
        trainable = selected and (config.TRAIN_BN or not is_batch_norm(layer))
        layer.trainable = trainable
        if trainable and layer.trainable_weights:
            trained.append(layer.name)

    for layer in model.layers:
        visit(layer, False)
    return trained


def trainable_weight_paths(model):
    """Paths of the weights the optimizer will update, e.g. "mrcnn_mask_conv1/kernel"."""
    return [w.path for w in model.trainable_weights]
