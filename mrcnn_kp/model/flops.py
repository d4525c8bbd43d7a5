"""Multiply-add FLOPs of a built Keras model, per layer and per part of the network.

    flops = count_flops(build_inference_model(config))
    flops["total"] / 1e9          # GFLOP of one forward pass at the model's static shapes
    flops["by_part"]["backbone"]  # conv1/res*/lite0_* layers, FPN, RPN, box/mask/keypoint heads

Convention (as torch.utils.flop_counter and the usual "GFLOPs" of papers x 2): a
multiply-accumulate is 2 FLOPs; only the layers that do them are counted (Conv2D, its
WholeInputConv2D form, DepthwiseConv2D, SeparableConv2D, Conv2DTranspose, Dense, inside
TimeDistributed too). Bias adds, batch norm, activations, ROIAlign, NMS and decoding are left
out: they move memory but are < 1 % of the arithmetic of a ResNet-50 FPN model. Checks against
published counts: keras.applications.ResNet50 at 224 x 224 (v1, stride in the first 1x1 conv)
counts 3.86 G multiply-adds, He et al.'s 3.8e9; MobileNetV2 300.8 M, Sandler et al.'s 300 M.

Shapes come from each layer call in the model's graph, so a layer called on several pyramid
levels (the RPN's shared convs) is counted at each level's size. An open batch dimension
(None) is taken as `batch` (default 1). With the layers' `trainable` flags the backward pass
is counted too (weight and input gradients). The benchmarks divide these counts by the
measured time for the achieved FLOP/s, and that by the device's peak (model FLOP utilisation).
"""
import math
import re

import keras
from keras import tree
from keras.src.models.functional import Functional

# Layer-name patterns of each part (docs/DESIGN.md names; first match wins).
PARTS = (
    ("fpn", r"fpn_.*"),
    ("rpn", r"rpn_.*"),
    ("keypoint_head", r"mrcnn_keypoint.*"),
    ("mask_head", r"mrcnn_mask.*"),
    ("box_head", r"mrcnn_.*"),
    ("backbone", r".*"),
)


def part_of(layer_name):
    """Which part of the network a layer belongs to, by its name (see PARTS)."""
    for part, pattern in PARTS:
        if re.fullmatch(pattern, layer_name):
            return part
    return "backbone"


COUNTED = (keras.layers.Conv2D, keras.layers.Conv2DTranspose, keras.layers.DepthwiseConv2D,
           keras.layers.SeparableConv2D, keras.layers.Dense)


def _counted(layer):
    while isinstance(layer, keras.layers.TimeDistributed):
        layer = layer.layer
    return isinstance(layer, COUNTED)


def layer_flops(layer, input_shape, output_shape):
    """FLOPs of one call of `layer` from input_shape to output_shape (static tuples); 0 for
    layers that do no multiply-adds. TimeDistributed: its inner layer per time step."""
    if isinstance(layer, keras.layers.TimeDistributed):
        steps = input_shape[1]
        return steps * layer_flops(layer.layer, (input_shape[0],) + tuple(input_shape[2:]),
                                   (output_shape[0],) + tuple(output_shape[2:]))
    if isinstance(layer, keras.layers.Conv2DTranspose):
        kh, kw = layer.kernel_size
        return 2 * math.prod(input_shape[:-1]) * kh * kw * input_shape[-1] * layer.filters
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return 2 * math.prod(output_shape[:-1]) * kh * kw * output_shape[-1]
    if isinstance(layer, keras.layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        channels = input_shape[-1]
        depthwise = 2 * math.prod(output_shape[:-1]) * kh * kw * channels * layer.depth_multiplier
        pointwise = 2 * math.prod(output_shape[:-1]) * channels * layer.depth_multiplier * \
            layer.filters
        return depthwise + pointwise
    if isinstance(layer, keras.layers.Conv2D):  # WholeInputConv2D included
        kh, kw = layer.kernel_size
        return 2 * math.prod(output_shape[:-1]) * kh * kw * input_shape[-1] // layer.groups * \
            layer.filters
    if isinstance(layer, keras.layers.Dense):
        return 2 * math.prod(input_shape[:-1]) * input_shape[-1] * layer.units
    return 0


def count_flops(model, batch=1):
    """FLOPs of one forward pass of a built functional model at batch size `batch`, and of
    the backward pass that training it with its current `trainable` flags needs:

        {"total": forward FLOPs, "by_part": {part: FLOPs}, "by_layer": {name: FLOPs},
         "backward": backward FLOPs}

    Backward, per counted layer: its forward FLOPs again for the weight gradient when the
    layer is trainable, and again for the input gradient when its input depends on a trainable
    weight (what autodiff computes; frozen layers before the first trainable one cost
    nothing). Nested functional (and Sequential) models are walked into. Raises ValueError when
    a counted layer's shape is not static. Uses Keras' graph runner (Functional's private
    _run_through_graph, as its compute_output_spec does): checked on Keras 3.15."""
    by_layer, backward = {}, [0]
    depends = set()  # ids of tensors downstream of a trainable weight

    def recorder(layer):
        if isinstance(layer, keras.Sequential):
            layer = layer._functional  # a Sequential runs a Functional inside
        if isinstance(layer, Functional):
            return lambda inputs, *args, **kwargs: layer._run_through_graph(
                layer._standardize_inputs(inputs), operation_fn=recorder)

        def spec(*args, **kwargs):
            outputs = layer.compute_output_spec(*args, **kwargs)
            inputs = [x for x in tree.flatten((args, kwargs)) if isinstance(x, keras.KerasTensor)]
            input_depends = any(id(x) in depends for x in inputs)
            trains = bool(getattr(layer, "trainable_weights", None))  # ops have none
            if _counted(layer):
                flops = _record(layer, args[0].shape, tree.flatten(outputs)[0].shape, by_layer)
                backward[0] += flops * (int(trains) + int(input_depends))
            if trains or input_depends:
                depends.update(id(x) for x in tree.flatten(outputs))
            return outputs
        return spec

    # Shape inference through the graph (what Functional.compute_output_spec does), from
    # inputs whose batch dimension is `batch`, so that [B * N, ...] ROI tensors are static.
    inputs = [keras.KerasTensor((batch if x.shape[0] is None else x.shape[0],) + x.shape[1:],
                                dtype=x.dtype) for x in model.inputs]
    model._run_through_graph(inputs, operation_fn=recorder)
    by_part = {}
    for name, flops in by_layer.items():
        part = part_of(name)
        by_part[part] = by_part.get(part, 0) + flops
    return {"total": sum(by_layer.values()), "by_part": by_part, "by_layer": by_layer,
            "backward": backward[0]}


def _record(layer, input_shape, output_shape, by_layer):
    if any(d is None for d in tuple(input_shape) + tuple(output_shape)):
        raise ValueError(f"{layer.name}: shape {input_shape} -> {output_shape} is not static; "
                         "build the model with fixed image and ROI sizes")
    flops = layer_flops(layer, tuple(input_shape), tuple(output_shape))
    by_layer[layer.name] = by_layer.get(layer.name, 0) + flops
    return flops
