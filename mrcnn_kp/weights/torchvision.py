"""torchvision's Keypoint R-CNN weights (`keypointrcnn_resnet50_fpn` .pth) into our model.

    from mrcnn_kp.config import TorchvisionKeypointConfig
    from mrcnn_kp.weights.torchvision import convert_torchvision
    report = convert_torchvision("keypointrcnn_resnet50_fpn_coco-fc266e95.pth",
                                 "kp_coco.weights.h5", TorchvisionKeypointConfig())
    print(report.summary())

The model must be built with `LAYOUT = "torchvision"` (the preset `TorchvisionKeypointConfig`,
`--config torchvision`): the same layers as our default model, with torchvision's options (see
mrcnn_kp.config), under our layer names. The state_dict is read with torch when it is installed
(`torch.load(weights_only=True)`), otherwise with mrcnn_kp.weights.pth_reader; neither runs pickled
code. Every tensor goes to one Keras weight (`torchvision_weight_map`):

    backbone.body.conv1 / bn1                 conv1 / bn_conv1
    backbone.body.layer{L}.{i}.conv{1,2,3}    res{L+1}{a,b,..}_branch2{a,b,c}  (bn likewise)
    backbone.body.layer{L}.0.downsample.0/1   res{L+1}a_branch1 / bn{L+1}a_branch1
    backbone.fpn.inner_blocks.{0..3}          fpn_c2p2 .. fpn_c5p5
    backbone.fpn.layer_blocks.{0..3}          fpn_p2 .. fpn_p5
    rpn.head.conv / cls_logits / bbox_pred    rpn_conv_shared / rpn_class_raw / rpn_bbox_pred
    roi_heads.box_head.fc6 / fc7              mrcnn_class_conv1 (7x7) / mrcnn_class_conv2 (1x1)
    roi_heads.box_predictor.cls_score         mrcnn_class_logits
    roi_heads.box_predictor.bbox_pred         mrcnn_bbox_fc
    roi_heads.keypoint_head.{0,2,..,14}       mrcnn_keypoint_conv1 .. 8
    roi_heads.keypoint_predictor.kps_score_lowres   mrcnn_keypoint_deconv

Layout changes: conv kernels OIHW -> HWIO; the transposed conv (in, out, kh, kw) ->
(kh, kw, out, in); Linear (out, in) -> Dense (in, out); fc6 (1024, 256 * 7 * 7) flattens torch's
(C, H, W) order, so it becomes the 7x7 conv kernel (7, 7, 256, 1024) of mrcnn_class_conv1 (no
ambiguity with Keras' (H, W, C) flattening); fc7 becomes a 1x1 conv. Box regressors
(rpn.head.bbox_pred, box_predictor.bbox_pred) output torchvision's (dx, dy, dw, dh) per anchor or
class: their rows are permuted to our (dy, dx, dh, dw), and the coder weights are the config's
std devs (RPN (1, 1, 1, 1), ROI 1 / (10, 10, 5, 5)). `*.num_batches_tracked` (plain BatchNorm2d
counters) has no Keras twin and is ignored; any other tensor not used is reported.

Older torchvision files (the COCO weights of 2019) name the FPN and RPN convs without the
`Conv2dNormActivation` level (`fpn.inner_blocks.0.weight`, `rpn.head.conv.weight`); those keys
are read under today's names, as torchvision's own loader does.
"""
import collections
import os
import re

import numpy as np

from mrcnn_kp.model.resnet import RESNET_STAGES

# (dx, dy, dw, dh) -> (dy, dx, dh, dw): output row j of ours is torchvision's row _DELTA_ORDER[j]
_DELTA_ORDER = (1, 0, 3, 2)
_BN = (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
       ("moving_variance", "running_var"))
_LEGACY_KEYS = (
    (re.compile(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.(weight|bias)$"), r"\1.0.\2"),
    (re.compile(r"^(rpn\.head\.conv)\.(weight|bias)$"), r"\1.0.0.\2"),
)
IGNORED_SUFFIXES = (".num_batches_tracked",)


class TorchvisionWeightsError(ValueError):
    """The state_dict does not fit the model (wrong layout, missing tensors, shapes)."""


Row = collections.namedtuple("Row", ["layer", "weight", "key", "layout"])


def _conv_rows(layer, key, bias=True, layout="conv"):
    rows = [Row(layer, "kernel", f"{key}.weight", layout)]
    if bias:
        rows.append(Row(layer, "bias", f"{key}.bias",
                        "bias_delta" if layout.endswith("_delta") else "vector"))
    return rows


def _bn_rows(layer, key):
    return [Row(layer, ours, f"{key}.{theirs}", "vector") for ours, theirs in _BN]


def torchvision_weight_map(config):
    """Every (keras layer, keras weight, torch key, layout) of config's torchvision model.

    Layouts: "conv" OIHW -> HWIO; "conv_delta" the same, output channels permuted from
    (dx, dy, dw, dh) to (dy, dx, dh, dw) per anchor ("bias_delta" for the biases of both); "fc_conv"
    a Linear on a flattened (C, H, W) input -> HWIO kernel; "dense" (out, in) -> (in, out);
    "dense_delta" the same with permuted outputs; "deconv" (in, out, kh, kw) -> (kh, kw, out,
    in); "vector" as it is.
    """
    if getattr(config, "LAYOUT", "matterport") != "torchvision":
        raise TorchvisionWeightsError(
            f"torchvision weights need a config with LAYOUT 'torchvision' (e.g. "
            f"TorchvisionKeypointConfig, --config torchvision); got LAYOUT {config.LAYOUT!r}")
    depth = {"resnet50": 50, "resnet101": 101}[config.BACKBONE]
    rows = _conv_rows("conv1", "backbone.body.conv1", bias=False)
    rows += _bn_rows("bn_conv1", "backbone.body.bn1")
    for layer_index, (stage, _filters, blocks50, blocks101) in enumerate(RESNET_STAGES, start=1):
        for i in range(blocks50 if depth == 50 else blocks101):
            block = "a" if i == 0 else chr(98 + i - 1)
            key = f"backbone.body.layer{layer_index}.{i}"
            for n, branch in ((1, "2a"), (2, "2b"), (3, "2c")):
                rows += _conv_rows(f"res{stage}{block}_branch{branch}", f"{key}.conv{n}", False)
                rows += _bn_rows(f"bn{stage}{block}_branch{branch}", f"{key}.bn{n}")
            if i == 0:
                rows += _conv_rows(f"res{stage}a_branch1", f"{key}.downsample.0", False)
                rows += _bn_rows(f"bn{stage}a_branch1", f"{key}.downsample.1")
    for i, level in enumerate(range(2, 6)):
        rows += _conv_rows(f"fpn_c{level}p{level}", f"backbone.fpn.inner_blocks.{i}.0")
        rows += _conv_rows(f"fpn_p{level}", f"backbone.fpn.layer_blocks.{i}.0")
    rows += _conv_rows("rpn_conv_shared", "rpn.head.conv.0.0")
    rows += _conv_rows("rpn_class_raw", "rpn.head.cls_logits")
    rows += _conv_rows("rpn_bbox_pred", "rpn.head.bbox_pred", layout="conv_delta")
    rows += _conv_rows("mrcnn_class_conv1", "roi_heads.box_head.fc6", layout="fc_conv")
    rows += _conv_rows("mrcnn_class_conv2", "roi_heads.box_head.fc7", layout="fc_conv")
    rows += _conv_rows("mrcnn_class_logits", "roi_heads.box_predictor.cls_score", layout="dense")
    rows += _conv_rows("mrcnn_bbox_fc", "roi_heads.box_predictor.bbox_pred",
                       layout="dense_delta")
    if config.KEYPOINT_HEAD != "deconv4":
        raise TorchvisionWeightsError(f"torchvision's keypoint head is KEYPOINT_HEAD 'deconv4', "
                                      f"got {config.KEYPOINT_HEAD!r}")
    for i in range(config.KEYPOINT_HEAD_NUM_CONVS):
        rows += _conv_rows(f"mrcnn_keypoint_conv{i + 1}", f"roi_heads.keypoint_head.{2 * i}")
    rows += _conv_rows("mrcnn_keypoint_deconv", "roi_heads.keypoint_predictor.kps_score_lowres",
                       layout="deconv")
    return rows


def _permute_deltas(array, axis):
    """Reorder groups of 4 along axis from (dx, dy, dw, dh) to (dy, dx, dh, dw)."""
    n = array.shape[axis]
    order = np.arange(n).reshape(-1, 4)[:, _DELTA_ORDER].reshape(-1)
    return np.take(array, order, axis=axis)


def to_keras(array, layout, keras_shape):
    """One torch tensor (numpy) -> the Keras weight of `keras_shape`, per `layout`."""
    array = np.asarray(array, dtype=np.float32)
    if layout in ("conv", "conv_delta"):
        out = array.transpose(2, 3, 1, 0)
        return _permute_deltas(out, 3) if layout == "conv_delta" else out
    if layout == "fc_conv":  # Linear (out, C*H*W) over a (C, H, W) flatten -> (H, W, C, out)
        kh, kw, channels, units = keras_shape
        return array.reshape(units, channels, kh, kw).transpose(2, 3, 1, 0)
    if layout == "dense":
        return array.T
    if layout == "dense_delta":
        return _permute_deltas(array, 0).T
    if layout == "deconv":
        return array.transpose(2, 3, 1, 0)
    if layout == "bias_delta":
        return _permute_deltas(array, 0)
    if layout == "vector":
        return array
    raise ValueError(f"unknown layout {layout!r}")


def normalize_keys(state):
    """Older torchvision names (FPN / RPN convs without the Conv2dNormActivation level) ->
    today's; other keys unchanged."""
    out = collections.OrderedDict()
    for key, value in state.items():
        for pattern, repl in _LEGACY_KEYS:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


def read_torchvision_state_dict(path):
    """{key: float32 numpy array} of a torchvision .pth, without running pickled code:
    torch.load(weights_only=True) when torch is installed, mrcnn_kp.weights.pth_reader otherwise."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        import pickle

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            # torch's message is a page long and suggests weights_only=False; keep its reason
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            reason = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line),
                          lines[-1] if lines else "not a state_dict")
            raise pickle.UnpicklingError(
                f"refusing to load it: {reason} (a state_dict holds only tensors, and loading "
                f"other objects could run code from the file)") from None
        for wrapper in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                state = state[wrapper]
        state = {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
                 for k, v in state.items() if hasattr(v, "numpy")}
    else:
        from mrcnn_kp.weights.pth_reader import read_state_dict

        state = read_state_dict(path)
    return normalize_keys(state)


class TorchvisionLoadReport:
    """What `load_torchvision_weights` did: loaded tensors, and the file's tensors not used."""

    def __init__(self, loaded, unused, ignored, layers_set, layers_not_set):
        self.loaded = loaded  # torch keys written into the model
        self.unused = unused  # torch keys with no place in the model (reported)
        self.ignored = ignored  # num_batches_tracked counters
        self.layers_set = layers_set
        self.layers_not_set = layers_not_set  # weighted model layers no tensor went to
        self.config = None  # convert_torchvision: the config the weights were saved with

    def summary(self):
        lines = [f"torchvision weights: {len(self.loaded)} tensors loaded into "
                 f"{len(self.layers_set)} layers; {len(self.ignored)} num_batches_tracked "
                 f"ignored; {len(self.unused)} tensors not used"]
        if self.unused:
            lines.append("  not used: " + ", ".join(self.unused[:20])
                         + (" ..." if len(self.unused) > 20 else ""))
        if self.layers_not_set:
            lines.append("  layers left at their initial values: "
                         + ", ".join(self.layers_not_set))
        eps = getattr(self.config, "BACKBONE_BN_EPSILON", None)
        if eps is not None:
            lines.append(f"  backbone batch-norm epsilon {eps:g} (BACKBONE_BN_EPSILON), as "
                         f"torchvision runs these weights")
        return "\n".join(lines)


def load_torchvision_weights(model, source, config):
    """Write a torchvision Keypoint R-CNN state_dict into `model` (built from `config`).

    source: a .pth path or a {key: array} dict. Raises TorchvisionWeightsError, leaving the
    model unchanged, when a tensor the model needs is missing or has the wrong shape.
    Returns a TorchvisionLoadReport (tensors of the file not used are listed there).
    """
    state = read_torchvision_state_dict(source) if isinstance(source, (str, os.PathLike)) \
        else normalize_keys({k: np.asarray(v) for k, v in source.items()})
    rows = torchvision_weight_map(config)
    layer_names = {layer.name for layer in model.layers}
    missing = [r.key for r in rows if r.layer in layer_names and r.key not in state]
    if missing:
        raise TorchvisionWeightsError(
            f"{len(missing)} tensors the model needs are not in the file, e.g. "
            f"{', '.join(missing[:5])}; is it a keypointrcnn_resnet50_fpn state_dict?")
    planned, problems = [], []
    for row in rows:
        if row.layer not in layer_names:
            continue
        variables = {v.name.split("/")[-1]: v for v in model.get_layer(row.layer).weights}
        if row.weight not in variables:
            problems.append(f"{row.layer} has no weight {row.weight!r}")
            continue
        variable = variables[row.weight]
        shape = tuple(variable.shape)
        try:
            value = to_keras(state[row.key], row.layout, shape)
        except ValueError as exc:
            problems.append(f"{row.key} {tuple(state[row.key].shape)}: {exc}")
            continue
        if value.shape != shape:
            problems.append(f"{row.key} {tuple(state[row.key].shape)} -> {value.shape} does not "
                            f"fit {row.layer}/{row.weight} {shape}")
            continue
        planned.append((variable, value, row))
    if problems:
        raise TorchvisionWeightsError("the state_dict does not fit the model: "
                                      + "; ".join(problems[:5]))
    for variable, value, _ in planned:
        variable.assign(value.astype(variable.dtype))
    used = {row.key for _, _, row in planned}
    ignored = sorted(k for k in state if k.endswith(IGNORED_SUFFIXES))
    unused = sorted(k for k in state if k not in used and not k.endswith(IGNORED_SUFFIXES))
    set_layers = sorted({row.layer for _, _, row in planned})
    not_set = sorted(layer.name for layer in model.layers
                     if layer.weights and layer.name not in set_layers)
    return TorchvisionLoadReport(sorted(used), unused, ignored, set_layers, not_set)


# sha256 of torchvision's published COCO_V1 keypoint weights (keypointrcnn_resnet50_fpn_coco-
# fc266e95.pth). torchvision runs that file with batch-norm epsilon 0 (keypointrcnn_resnet50_fpn
# calls overwrite_eps(model, 0.0) for COCO_V1 only), not the 1e-5 of its layers.
TORCHVISION_COCO_V1_SHA256 = "fc266e953d2b302cdcbb9ae66f71f6b0d4649928bf02dc573961e361e4918926"
TORCHVISION_COCO_V1_BN_EPSILON = 0.0


def config_for_source(config, source):
    """config as torchvision runs the file `source`: BACKBONE_BN_EPSILON 0 for the published
    COCO_V1 file (recognised by its sha256) unless the config sets an epsilon itself."""
    if getattr(config, "BACKBONE_BN_EPSILON", None) is not None or \
            not isinstance(source, (str, os.PathLike)):
        return config
    from mrcnn_kp.download import sha256_of

    if sha256_of(source) != TORCHVISION_COCO_V1_SHA256:
        return config
    return config.copy(BACKBONE_BN_EPSILON=TORCHVISION_COCO_V1_BN_EPSILON)


def convert_torchvision(source, output, config=None):
    """Build config's inference model (default TorchvisionKeypointConfig), load the torchvision
    state_dict `source` into it and save `output` (.weights.h5, config stored inside).
    The published COCO_V1 file gets torchvision's batch-norm epsilon for it
    (config_for_source). Returns the TorchvisionLoadReport; its `config` is the one saved."""
    from mrcnn_kp.config import TorchvisionKeypointConfig
    from mrcnn_kp.model.keypoint_rcnn import build_inference_model
    from mrcnn_kp.weights import save_weights

    config = config or TorchvisionKeypointConfig()
    torchvision_weight_map(config)  # layout check before the (slow) build
    config = config_for_source(config, source)
    if isinstance(source, (str, os.PathLike)):  # a bad or unsafe file fails before the build
        source = read_torchvision_state_dict(source)
    model = build_inference_model(config)
    report = load_torchvision_weights(model, source, config)
    save_weights(model, output, config=config)
    report.config = config
    return report
