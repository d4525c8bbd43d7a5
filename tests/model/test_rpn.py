"""RPN: shared layers over P2..P6, output rows in the anchor order of generate_pyramid_anchors."""
import keras
import numpy as np

from mrcnn_kp.config import Config, TinyConfig
from mrcnn_kp.model.rpn import build_rpn
from mrcnn_kp.ops.anchors import generate_pyramid_anchors, level_anchor_counts


def rpn_model(config, channels):
    side = config.IMAGE_SHAPE[0]
    inputs = [keras.Input((side // s, side // s, channels)) for s in config.BACKBONE_STRIDES]
    return keras.Model(inputs, build_rpn(inputs, config))


def test_output_shapes_cover_every_anchor():
    config = TinyConfig()
    model = rpn_model(config, 32)
    features = [np.zeros((2,) + tuple(t.shape[1:]), "float32") for t in model.inputs]
    logits, probs, deltas = [np.asarray(x) for x in model(features)]
    a = config.NUM_ANCHORS  # 3 * (32^2 + 16^2 + 8^2 + 4^2 + 2^2) = 4092
    assert a == 4092
    assert logits.shape == (2, a, 2) and probs.shape == (2, a, 2) and deltas.shape == (2, a, 4)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)


def test_three_shared_layers_with_matterport_shapes():
    model = rpn_model(Config(IMAGE_MAX_DIM=256, IMAGE_MIN_DIM=256), 256)
    weighted = {layer.name: [tuple(w.shape) for w in layer.weights] for layer in model.layers
                if layer.weights}
    assert weighted == {"rpn_conv_shared": [(3, 3, 256, 512), (512,)],
                        "rpn_class_raw": [(1, 1, 512, 6), (6,)],
                        "rpn_bbox_pred": [(1, 1, 512, 12), (12,)]}


def test_row_of_a_feature_cell_is_the_row_of_its_anchor():
    """A spike at (y=2, x=3) of P4 lights exactly the rows of the 3 anchors centred there."""
    config = TinyConfig()
    model = rpn_model(config, 4)
    conv = model.get_layer("rpn_conv_shared")
    kernel = np.zeros(conv.kernel.shape, "float32")
    kernel[1, 1, 0, 0] = 1.0  # centre tap: shared[..., 0] = relu(P[..., 0])
    conv.set_weights([kernel, np.zeros(conv.bias.shape, "float32")])
    raw = model.get_layer("rpn_class_raw")
    class_kernel = np.zeros(raw.kernel.shape, "float32")
    for anchor in range(3):
        class_kernel[0, 0, 0, 2 * anchor + 1] = anchor + 1.0  # fg logit of anchor a = (a+1) x
    raw.set_weights([class_kernel, np.zeros(raw.bias.shape, "float32")])
    features = [np.zeros((1,) + tuple(t.shape[1:]), "float32") for t in model.inputs]
    features[2][0, 2, 3, 0] = 1.0  # P4 (stride 16, 8 x 8 cells)
    logits = np.asarray(model(features)[0])[0, :, 1]  # [A] fg logits
    lit = np.flatnonzero(logits)
    start = sum(level_anchor_counts(config)[:2])  # rows of P2 and P3 come first
    assert lit.tolist() == [start + (2 * 8 + 3) * 3 + a for a in range(3)]
    np.testing.assert_allclose(logits[lit], [1.0, 2.0, 3.0])
    anchors = generate_pyramid_anchors(config)[lit]
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    np.testing.assert_allclose(centres, [[3 * 16, 2 * 16]] * 3, atol=1e-4)  # (x, y) * stride


def test_torchvision_layout_gives_its_sigmoid_as_two_way_softmax():
    """LAYOUT "torchvision": a pyramid-wide shared conv and one logit l per anchor, given out as
    the logits (0, l), whose softmax column 1 is sigmoid(l); rows in the anchor order."""
    from mrcnn_kp.config import TorchvisionKeypointConfig

    config = TorchvisionKeypointConfig(IMAGE_MAX_DIM=64, IMAGE_MIN_DIM=64,
                                       IMAGE_RESIZE_MAX_SIDE=64, TOP_DOWN_PYRAMID_SIZE=8)
    model = rpn_model(config, 8)
    assert tuple(model.get_layer("rpn_conv_shared").kernel.shape) == (3, 3, 8, 8)
    assert tuple(model.get_layer("rpn_class_raw").kernel.shape) == (1, 1, 8, 3)
    rng = np.random.default_rng(0)
    pyramid = [rng.normal(size=(1,) + tuple(t.shape[1:])).astype("float32")
               for t in model.inputs]
    logits, probs, deltas = [np.asarray(o) for o in model.predict_on_batch(pyramid)]
    assert logits.shape == (1, config.NUM_ANCHORS, 2)
    assert deltas.shape == (1, config.NUM_ANCHORS, 4)
    np.testing.assert_array_equal(logits[..., 0], 0.0)
    np.testing.assert_allclose(probs[..., 1], 1 / (1 + np.exp(-logits[..., 1])), rtol=1e-5,
                               atol=1e-7)
    raw = keras.Model(model.inputs, model.get_layer("rpn_class_raw").output)
    first = np.asarray(raw.predict_on_batch(pyramid))  # P2's [1, 16, 16, 3]
    np.testing.assert_allclose(logits[0, :3, 1], first[0, 0, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits[0, 3:6, 1], first[0, 0, 1], rtol=1e-5, atol=1e-6)
