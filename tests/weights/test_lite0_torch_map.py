"""mrcnn_kp.weights.lite0_torch_map: the EfficientNet-Lite0 <-> lukemelas state_dict table and
the torch -> Keras layouts."""
import numpy as np
import pytest

from mrcnn_kp.config import TinyConfig
from mrcnn_kp.model.backbone import build_backbone_model
from mrcnn_kp.weights.lite0_torch_map import lite0_torch_weight_map, torch_to_keras_weight


def test_lite0_torch_map_covers_every_weight_with_the_files_shapes():
    model = build_backbone_model(TinyConfig().copy(BACKBONE="efficientnet_lite0"))
    rows = lite0_torch_weight_map()
    # The file has 296 entries: 49 num_batches_tracked and the 2 _fc tensors have no twin here.
    assert len(rows) == 296 - 49 - 2 == 245
    assert len({r[2] for r in rows}) == 245
    shapes = {f"{layer.name}/{w.name}": tuple(w.shape) for layer in model.layers
              for w in layer.weights}
    assert sorted(f"{r[0]}/{r[1]}" for r in rows) == sorted(shapes)
    # Shapes as stored in efficientnet-lite0-57934424.pth (torch layout), spot-checked.
    torch_shapes = {
        "_conv_stem.weight": (32, 3, 3, 3),
        "_blocks.0._project_conv.weight": (16, 32, 1, 1),
        "_blocks.1._expand_conv.weight": (96, 16, 1, 1),
        "_blocks.1._depthwise_conv.weight": (96, 1, 3, 3),
        "_blocks.5._project_conv.weight": (80, 240, 1, 1),
        "_blocks.11._depthwise_conv.weight": (672, 1, 5, 5),
        "_blocks.15._expand_conv.weight": (1152, 192, 1, 1),
        "_blocks.15._bn2.running_var": (320,),
        "_conv_head.weight": (1280, 320, 1, 1),
        "_bn1.weight": (1280,),
    }
    by_key = {r[2]: r for r in rows}
    for key, torch_shape in torch_shapes.items():
        layer, weight, _, layout = by_key[key]
        converted = torch_to_keras_weight(np.zeros(torch_shape, "float32"), layout)
        assert converted.shape == shapes[f"{layer}/{weight}"], key
    classifier = lite0_torch_weight_map(include_classifier=True)[-2:]
    assert classifier == [("lite0_fc", "kernel", "_fc.weight", "dense"),
                          ("lite0_fc", "bias", "_fc.bias", "vector")]


def test_torch_to_keras_weight_layouts():
    conv = np.arange(4 * 3 * 5 * 7, dtype="float32").reshape(4, 3, 5, 7)  # (out, in, kh, kw)
    out = torch_to_keras_weight(conv, "conv")
    assert out.shape == (5, 7, 3, 4) and out[2, 6, 1, 3] == conv[3, 1, 2, 6]
    depthwise = np.arange(6 * 9, dtype="float32").reshape(6, 1, 3, 3)
    out = torch_to_keras_weight(depthwise, "depthwise")
    assert out.shape == (3, 3, 6, 1) and out[0, 2, 5, 0] == depthwise[5, 0, 0, 2]
    assert torch_to_keras_weight(np.zeros((10, 4)), "dense").shape == (4, 10)
    with pytest.raises(ValueError, match="unknown weight layout 'linear'"):
        torch_to_keras_weight(np.zeros(3), "linear")
