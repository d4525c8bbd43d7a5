"""ROI heads: output shapes, matterport / Mask_RCNN_Humanpose weight names and shapes, BN switch,
and the ROI-axis folding layers."""
import keras
import numpy as np
import pytest

from mrcnn_kp.config import Config, TinyConfig
from mrcnn_kp.model.heads import (BoxHead, FirstRois, KeypointHead, MaskHead, MergeRoiAxis,
                                  PyramidRoiAlign, SplitRoiAxis, WholeInputConv2D)

NUM_ROIS = 3


def head_model(head, config, channels, num_rois=NUM_ROIS):
    side = config.IMAGE_SHAPE[0]
    rois = keras.Input((num_rois, 4))
    maps = [keras.Input((side // s, side // s, channels)) for s in (4, 8, 16, 32)]
    return keras.Model([rois] + maps, head(rois, maps))


def run(model, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    side = 4 * model.inputs[1].shape[1]
    xy = rng.uniform(0, side / 2, (batch, NUM_ROIS, 2))
    rois = np.concatenate([xy, xy + rng.uniform(8, side / 2, (batch, NUM_ROIS, 2))], -1)
    maps = [rng.normal(size=(batch,) + tuple(t.shape[1:])) for t in model.inputs[1:]]
    out = model([rois.astype("float32")] + [m.astype("float32") for m in maps])
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else np.asarray(out)


def weight_shapes(model):
    return {layer.name: [tuple(w.shape) for w in layer.weights] for layer in model.layers
            if layer.weights}


def bn(width):
    return [(width,)] * 4  # gamma, beta, moving mean, moving variance


MATTERPORT_512 = Config(IMAGE_MAX_DIM=256, IMAGE_MIN_DIM=256)  # 2 classes, 256-channel FPN


# ------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("mode", ["roi_align", "crop_and_resize"])
def test_box_head_shapes(mode):
    config = TinyConfig(ROI_ALIGN_MODE=mode)
    logits, probs, deltas = run(head_model(BoxHead(config), config, 32))
    assert logits.shape == (2, NUM_ROIS, 2) and deltas.shape == (2, NUM_ROIS, 2, 4)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)


def test_mask_head_shape():
    config = TinyConfig()
    assert run(head_model(MaskHead(config), config, 32)).shape == (2, NUM_ROIS, 28, 28, 2)


@pytest.mark.parametrize("variant", ["deconv4", "humanpose"])
def test_keypoint_head_shape(variant):
    config = TinyConfig(KEYPOINT_HEAD=variant)
    out = run(head_model(KeypointHead(config), config, 32))
    assert out.shape == (2, NUM_ROIS, 56, 56, 17)


# ------------------------------------------------------------------------------ names
def test_box_and_mask_heads_match_matterport_weights():
    config = MATTERPORT_512
    box = weight_shapes(head_model(BoxHead(config), config, 256))
    assert box == {
        "mrcnn_class_conv1": [(7, 7, 256, 1024), (1024,)], "mrcnn_class_bn1": bn(1024),
        "mrcnn_class_conv2": [(1, 1, 1024, 1024), (1024,)], "mrcnn_class_bn2": bn(1024),
        "mrcnn_class_logits": [(1024, 2), (2,)], "mrcnn_bbox_fc": [(1024, 8), (8,)]}
    mask = weight_shapes(head_model(MaskHead(config), config, 256))
    expected = {}
    for i in range(1, 5):
        expected[f"mrcnn_mask_conv{i}"] = [(3, 3, 256, 256), (256,)]
        expected[f"mrcnn_mask_bn{i}"] = bn(256)
    expected["mrcnn_mask_deconv"] = [(2, 2, 256, 256), (256,)]  # Keras (kh, kw, out, in)
    expected["mrcnn_mask"] = [(1, 1, 256, 2), (2,)]
    assert mask == expected


def test_humanpose_keypoint_head_matches_mask_rcnn_humanpose_weights():
    config = Config(IMAGE_MAX_DIM=256, IMAGE_MIN_DIM=256, KEYPOINT_HEAD="humanpose")
    shapes = weight_shapes(head_model(KeypointHead(config), config, 256))
    expected = {}
    for i in range(1, 9):
        expected[f"mrcnn_keypoint_mask_conv{i}"] = [(3, 3, 256 if i == 1 else 512, 512), (512,)]
        expected[f"mrcnn_keypoint_mask_bn{i}"] = bn(512)
    expected["mrcnn_keypoint_mask_deconv"] = [(2, 2, 17, 512), (17,)]
    assert shapes == expected


def test_deconv4_keypoint_head_is_the_published_layout():
    config = MATTERPORT_512
    shapes = weight_shapes(head_model(KeypointHead(config), config, 256))
    expected = {f"mrcnn_keypoint_conv{i}": [(3, 3, 256 if i == 1 else 512, 512), (512,)]
                for i in range(1, 9)}
    expected["mrcnn_keypoint_deconv"] = [(4, 4, 17, 512), (17,)]
    assert shapes == expected


@pytest.mark.parametrize("train_bn", [False, True])
def test_head_batch_norm_follows_train_bn(train_bn):
    config = TinyConfig(TRAIN_BN=train_bn)
    head = BoxHead(config)
    assert head.bn1.frozen is (not train_bn) and head.bn2.frozen is (not train_bn)


def test_mixed_precision_pools_float32_boxes_from_float16_features():
    policy = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        config = TinyConfig()
        model = head_model(BoxHead(config), config, 32)
        assert model.get_layer("mrcnn_class_conv1").compute_dtype == "float16"
        first = FirstRois(2)
        assert keras.backend.standardize_dtype(first(np.ones((1, 3, 4), "float32")).dtype) \
            == "float32"  # boxes are not cast to float16 on their way to ROIAlign
        logits, probs, deltas = run(model)
        assert probs.dtype == np.float32 and np.all(np.isfinite(deltas))
    finally:
        keras.mixed_precision.set_global_policy(policy)


# ------------------------------------------------------------------------------ helpers
def test_roi_axis_folding_round_trip_and_config():
    x = np.arange(2 * 3 * 5, dtype="float32").reshape(2, 3, 5)
    merged = np.asarray(MergeRoiAxis()(x))
    assert merged.shape == (6, 5)
    split = SplitRoiAxis.from_config(SplitRoiAxis().get_config())
    np.testing.assert_array_equal(np.asarray(split(merged, np.zeros((2, 3, 4)))), x)
    first = FirstRois.from_config(FirstRois(2).get_config())
    np.testing.assert_array_equal(np.asarray(first(x)), x[:, :2])


def test_pyramid_roi_align_layer_config_and_modes():
    layer = PyramidRoiAlign(7, (128, 128, 3), 2, True, mode="crop_and_resize", name="roi")
    again = PyramidRoiAlign.from_config(layer.get_config())
    assert (again.pool_size, again.image_shape, again.aligned, again.mode) == (
        7, (128, 128, 3), True, "crop_and_resize")
    with pytest.raises(ValueError, match="unknown ROI_ALIGN_MODE 'nearest'"):
        PyramidRoiAlign(7, (128, 128, 3), mode="nearest")


@pytest.mark.parametrize("kernel", [7, 1])
def test_whole_input_conv_is_the_valid_conv_it_replaces(kernel):
    """Same weights -> the same output and the same gradients as Conv2D(padding="valid")."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, kernel, kernel, 16)).astype("float32")
    conv = keras.layers.Conv2D(24, kernel, padding="valid", activation="relu")
    fast = WholeInputConv2D(24, kernel, activation="relu")
    conv.build(x.shape)
    fast.build(x.shape)
    assert [tuple(w.shape) for w in fast.weights] == [(kernel, kernel, 16, 24), (24,)]
    weights = [rng.normal(size=w.shape).astype("float32") * 0.1 for w in conv.weights]
    conv.set_weights(weights)
    fast.set_weights(weights)
    expected, got = np.asarray(conv(x)), np.asarray(fast(x))
    assert got.shape == (5, 1, 1, 24)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert (expected > 0).any() and (expected == 0).any()  # the relu is applied on both

    def grads(layer):
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = tf.reduce_sum(tf.square(layer(xt)))
        return [np.asarray(g) for g in tape.gradient(loss, [xt] + layer.trainable_weights)]

    if keras.backend.backend() == "tensorflow":
        for g_fast, g_conv in zip(grads(fast), grads(conv)):
            np.testing.assert_allclose(g_fast, g_conv, rtol=1e-4, atol=1e-4)


def test_whole_input_conv_refuses_a_larger_input():
    layer = WholeInputConv2D(4, 7)
    with pytest.raises(ValueError, match=r"mrcnn_class_conv1: input \(9, 9, 8\) is not the "
                                         r"kernel's 7x7 window"):
        WholeInputConv2D(4, 7, name="mrcnn_class_conv1")(np.zeros((1, 9, 9, 8), "float32"))
    assert layer.get_config()["padding"] == "valid"
    assert WholeInputConv2D.from_config(layer.get_config()).kernel_size == (7, 7)
