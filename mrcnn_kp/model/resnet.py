"""ResNet-50 and ResNet-101 backbones: image -> [C2, C3, C4, C5].

"resnet50" and "resnet101" follow matterport's `resnet_graph` layout and names, so
`mask_rcnn_coco.h5` and its descendants load. Stem: ZeroPadding2D(3) -> `conv1` 7x7/2 valid ->
`bn_conv1` -> ReLU -> MaxPool 3x3/2 "same". Bottleneck blocks `res{stage}{block}_branch2a/2b/2c`
(1x1, 3x3 "same", 1x1) with `bn{stage}{block}_branch...`, shortcut `res{stage}a_branch1` on the
first block of a stage, block output `res{stage}{block}_out` = relu(add). Stride 2 sits on
`branch2a` and `branch1` of blocks 3a, 4a and 5a (the 1x1, as in Caffe's ResNet and matterport).
All convs have a bias; batch-norm epsilon 1e-3. Block letters are `chr(98 + i)` after "a", so
ResNet-101's 22 identity blocks of stage 4 are `res4b`..`res4w` (matterport's naming, checked in
its `resnet_graph`). Taps: C2..C5 = `res2c_out`, `res3d_out`, `res4f_out` (`res4w_out` for 101),
`res5c_out`.

With `config.LAYOUT == "torchvision"` the ResNets take torchvision's shape under the same layer
names (so `mrcnn_kp.weights.torchvision` maps its state_dict onto them): ResNet v1.5, the stride
on the 3x3 `branch2b` instead of the 1x1s; convs without bias; batch-norm epsilon 1e-5
(FrozenBatchNorm2d's); torch's symmetric padding where TF's "same" would pad a stride-2 layer at
the bottom/right only (ZeroPadding2D(1) then "valid" for the stride-2 3x3 convs and for the
max-pool, whose inputs are >= 0 after the ReLU, so zero padding equals torch's -inf padding).
"""
from keras import layers

from mrcnn_kp.model.common_layers import batch_norm, glorot_uniform
from mrcnn_kp.model.torchvision_layout import is_torchvision_layout

RESNET_BN_EPSILON = 1e-3
TORCHVISION_BN_EPSILON = 1e-5  # torchvision.ops.FrozenBatchNorm2d / nn.BatchNorm2d

# ResNet stages 2..5: (filters of branch2a/2b/2c, blocks in resnet50, blocks in resnet101).
RESNET_STAGES = (
    (2, (64, 64, 256), 3, 3),
    (3, (128, 128, 512), 4, 4),
    (4, (256, 256, 1024), 6, 23),
    (5, (512, 512, 2048), 3, 3),
)


def _resnet_conv(filters, kernel, name, strides=1, padding="valid", use_bias=True):
    """matterport's ResNet conv: with bias, glorot-uniform kernel (Keras' default)."""
    return layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=use_bias,
                         kernel_initializer=glorot_uniform(), name=name)


def resnet_bn_epsilon(config):
    """The ResNet's batch-norm epsilon: config.BACKBONE_BN_EPSILON, else the layout's."""
    eps = getattr(config, "BACKBONE_BN_EPSILON", None)
    if eps is not None:
        return float(eps)
    return TORCHVISION_BN_EPSILON if is_torchvision_layout(config) else RESNET_BN_EPSILON


def _resnet_block(x, config, stage, block, filters, strides, with_shortcut_conv, valid=None):
    """One bottleneck block, matterport's conv_block / identity_block names (torchvision's
    v1.5 block under config.LAYOUT "torchvision": see the module docstring)."""
    f1, f2, f3 = filters
    conv = f"res{stage}{block}_branch"
    bn = f"bn{stage}{block}_branch"
    torchvision = is_torchvision_layout(config)
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
    torchvision = is_torchvision_layout(config)
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
