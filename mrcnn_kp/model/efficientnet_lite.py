"""The EfficientNet-Lite0 backbone: image -> [C2, C3, C4, C5] (24, 40, 112, 1280 channels).

EfficientNet-B0 widths and depths without squeeze-excite, with ReLU6, the stem (32) and head
(1280) fixed, as the Lite variants define (TF's efficientnet/lite builder and
the lukemelas-style `efficientnet_lite_pytorch` package). Convolutions have no bias; "same"
padding is TF's (the extra row/column of a stride-2 conv at the bottom/right), which is also
what lukemelas' `Conv2dStaticSamePadding` does, so converted weights give the same numbers.
Batch-norm epsilon 1e-3, momentum config.BN_MOMENTUM (0.99 = torch's 0.01). Drop-connect
(stochastic depth) is left out: the detector trains with it off. Taps: C2..C5 = outputs of
the 24-, 40- and 112-channel stages and of the 1280-channel head (ReLU6(BN(1x1 conv of the
320-channel stage))), so every pretrained tensor except the classifier `_fc` is used.

Layer names and block table
---------------------------
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

The torch -> Keras weight table for these names is `mrcnn_kp.weights.lite0_torch_map`.
"""
from keras import layers

from mrcnn_kp.model.common_layers import HostVarianceScaling, batch_norm

LITE0_BN_EPSILON = 1e-3

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
