"""Backbones: tap shapes and strides, matterport names and shapes, parameter counts, frozen BN,
stage regexes and the EfficientNet-Lite0 <-> lukemelas state_dict table."""
import re
import types

import keras
import numpy as np
import pytest

from mrcnn_kp.config import TinyConfig
from mrcnn_kp.model import backbone as bb

SIDE = 128  # TinyConfig.IMAGE_MAX_DIM
_MODELS = {}


def backbone_model(name):
    """Build each backbone once per test session (ResNet-101 takes seconds)."""
    if name not in _MODELS:
        _MODELS[name] = bb.build_backbone_model(TinyConfig().copy(BACKBONE=name))
    return _MODELS[name]


def predict(model, images):
    """Outputs as numpy. On JAX one jit-compiled call is 4x faster than eager op-by-op dispatch
    (each op compiles on first use); on TensorFlow the eager call is the faster one."""
    if keras.backend.backend() == "jax":
        outputs = model.predict_on_batch(images)
    else:
        outputs = model(images)
    return [np.asarray(o) for o in outputs]


def weighted_layers(model):
    return {layer.name: [tuple(w.shape) for w in layer.weights]
            for layer in model.layers if layer.weights}


def matterport_resnet50_weights():
    """The ResNet-50 layers and weight shapes of docs/MATTERPORT.md, spelt out."""
    expected = {"conv1": [(7, 7, 3, 64), (64,)], "bn_conv1": [(64,)] * 4}
    cin = 64
    for stage, blocks, (f1, f2, f3) in ((2, "abc", (64, 64, 256)), (3, "abcd", (128, 128, 512)),
                                        (4, "abcdef", (256, 256, 1024)),
                                        (5, "abc", (512, 512, 2048))):
        for block in blocks:
            convs = {"2a": (1, 1, cin, f1), "2b": (3, 3, f1, f2), "2c": (1, 1, f2, f3)}
            if block == "a":
                convs["1"] = (1, 1, cin, f3)
            for branch, shape in convs.items():
                expected[f"res{stage}{block}_branch{branch}"] = [shape, (shape[-1],)]
                expected[f"bn{stage}{block}_branch{branch}"] = [(shape[-1],)] * 4
            cin = f3
    return expected


@pytest.mark.parametrize("name, channels", [
    ("resnet50", (256, 512, 1024, 2048)),
    ("resnet101", (256, 512, 1024, 2048)),
    ("efficientnet_lite0", (24, 40, 112, 1280)),
])
def test_taps_are_c2_to_c5_at_strides_4_to_32(name, channels):
    model = backbone_model(name)
    images = np.random.default_rng(0).normal(size=(2, SIDE, SIDE, 3)).astype("float32")
    features = predict(model, images)
    assert [f.shape for f in features] == [
        (2, SIDE // s, SIDE // s, c) for s, c in zip(bb.BACKBONE_TAP_STRIDES, channels)]
    assert bb.backbone_channels(TinyConfig().copy(BACKBONE=name)) == channels
    # The taps are the named layers of BACKBONE_STAGES (the FPN and weight files rely on them).
    taps = bb.backbone_tap_names(TinyConfig().copy(BACKBONE=name))
    assert [tuple(model.get_layer(t).output.shape[1:]) for t in taps] == [
        tuple(f.shape[1:]) for f in features]
    assert all(np.isfinite(f).all() and f.std() > 0 for f in features)


def test_resnet50_names_and_shapes_equal_matterport():
    found = weighted_layers(backbone_model("resnet50"))
    expected = matterport_resnet50_weights()
    assert sum(name.startswith(("res", "conv")) for name in expected) == 53
    assert sum(name.startswith("bn") for name in expected) == 53
    assert found == expected
    assert found["res4f_branch2c"][0] == (1, 1, 256, 1024)
    # Stride 2 on the 1x1 branch2a and branch1 of 3a/4a/5a, never on the 3x3.
    model = backbone_model("resnet50")
    strided = sorted(layer.name for layer in model.layers
                     if isinstance(layer, keras.layers.Conv2D) and layer.strides == (2, 2))
    assert strided == ["conv1", "res3a_branch1", "res3a_branch2a", "res4a_branch1",
                       "res4a_branch2a", "res5a_branch1", "res5a_branch2a"]
    bn_layers = [layer for layer in model.layers if isinstance(layer, bb.FrozenableBatchNorm)]
    assert {layer.epsilon for layer in bn_layers} == {1e-3}


def test_resnet50_parameter_count():
    # keras.applications.ResNet50(include_top=False): 23,587,712 (compared in the next test).
    assert backbone_model("resnet50").count_params() == 23_587_712  # incl. BN moving statistics


@pytest.mark.tf_only  # not TF-specific, but on JAX keras.applications' initialisers compile an
def test_resnet50_parameter_count_equals_keras_applications():  # RNG program per shape (50 s)
    reference = keras.applications.ResNet50(weights=None, include_top=False,
                                            input_shape=(SIDE, SIDE, 3))
    assert backbone_model("resnet50").count_params() == reference.count_params()


def test_resnet101_stage4_has_23_blocks_named_like_matterport():
    model = backbone_model("resnet101")
    stage4 = sorted({m.group(1) for layer in model.layers
                     if (m := re.fullmatch(r"res4([a-z])_branch2a", layer.name))})
    assert stage4 == [chr(c) for c in range(ord("a"), ord("w") + 1)]  # a + chr(98 + 0..21)
    assert bb.backbone_tap_names(TinyConfig().copy(BACKBONE="resnet101"))[2] == "res4w_out"
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 104
    # keras.applications.ResNet101(include_top=False) has the same 42,658,176 parameters.
    assert model.count_params() == 42_658_176


def test_lite0_parameter_count_and_layer_names():
    model = backbone_model("efficientnet_lite0")
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    # lukemelas' Lite0 file holds 4,652,008 parameters; its 1000-class _fc has 1,281,000.
    assert trainable == 4_652_008 - 1_281_000
    assert model.count_params() == 3_413_024  # + 42,016 BN moving statistics
    weighted = [layer.name for layer in model.layers if layer.weights]
    assert all(re.match(r"lite0_(stem|stage[2-5])_", name) for name in weighted), weighted
    assert not any(isinstance(layer, keras.layers.GlobalAveragePooling2D) for layer in model.layers)
    relu6 = [layer for layer in model.layers if isinstance(layer, keras.layers.ReLU)]
    assert len(relu6) == 1 + 31 + 1 and {layer.max_value for layer in relu6} == {6.0}
    assert not any(layer.bias is not None for layer in model.layers
                   if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)))


def test_lite0_blocks_follow_the_efficientnet_b0_table():
    specs = bb.lite0_block_specs()
    assert len(specs) == 16
    assert [s["out_channels"] for s in specs] == [16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112,
                                                  192, 192, 192, 192, 320]
    assert [s["kernel"] for s in specs] == [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]
    assert [i for i, s in enumerate(specs) if s["stride"] == 2] == [1, 3, 5, 11]
    assert [s["level"] for s in specs] == [1, 2, 2, 3, 3, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5]
    assert specs[0]["prefix"] == "lite0_stem_block0" and specs[10]["prefix"] == \
        "lite0_stage4_block10"


def test_lite0_torch_map_covers_every_weight_with_the_files_shapes():
    model = backbone_model("efficientnet_lite0")
    rows = bb.lite0_torch_weight_map()
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
        converted = bb.torch_to_keras_weight(np.zeros(torch_shape, "float32"), layout)
        assert converted.shape == shapes[f"{layer}/{weight}"], key
    classifier = bb.lite0_torch_weight_map(include_classifier=True)[-2:]
    assert classifier == [("lite0_fc", "kernel", "_fc.weight", "dense"),
                          ("lite0_fc", "bias", "_fc.bias", "vector")]


def test_torch_to_keras_weight_layouts():
    conv = np.arange(4 * 3 * 5 * 7, dtype="float32").reshape(4, 3, 5, 7)  # (out, in, kh, kw)
    out = bb.torch_to_keras_weight(conv, "conv")
    assert out.shape == (5, 7, 3, 4) and out[2, 6, 1, 3] == conv[3, 1, 2, 6]
    depthwise = np.arange(6 * 9, dtype="float32").reshape(6, 1, 3, 3)
    out = bb.torch_to_keras_weight(depthwise, "depthwise")
    assert out.shape == (3, 3, 6, 1) and out[0, 2, 5, 0] == depthwise[5, 0, 0, 2]
    assert bb.torch_to_keras_weight(np.zeros((10, 4)), "dense").shape == (4, 10)
    with pytest.raises(ValueError, match="unknown weight layout 'linear'"):
        bb.torch_to_keras_weight(np.zeros(3), "linear")


def _tiny_bn_model(frozen):
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(2, 1, name="conv")(inputs)
    x = bb.FrozenableBatchNorm(frozen=frozen, name="bn")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


@pytest.mark.parametrize("frozen", [True, False])
def test_frozen_batch_norm_keeps_moving_statistics_while_training(frozen):
    model = _tiny_bn_model(frozen)
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(8, 4, 4, 3)) * 3 + 5).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    bn = model.get_layer("bn")
    before = np.asarray(bn.moving_mean).copy(), np.asarray(bn.moving_variance).copy()
    gamma_before = np.asarray(bn.gamma).copy()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    changed_mean = not np.allclose(np.asarray(bn.moving_mean), before[0])
    changed_var = not np.allclose(np.asarray(bn.moving_variance), before[1])
    assert changed_mean is (not frozen) and changed_var is (not frozen)
    assert not np.allclose(np.asarray(bn.gamma), gamma_before)  # gamma/beta still train
    same = np.allclose(np.asarray(model(x, training=True)), np.asarray(model(x, training=False)))
    assert same is frozen


def test_frozen_batch_norm_config_round_trip_keeps_its_switch():
    layer = bb.FrozenableBatchNorm(frozen=True, epsilon=1e-3, name="bn_x")
    restored = bb.FrozenableBatchNorm.from_config(layer.get_config())
    assert restored.frozen is True and restored.epsilon == 1e-3 and restored.name == "bn_x"
    assert keras.saving.get_registered_object("mrcnn_kp>FrozenableBatchNorm") is \
        bb.FrozenableBatchNorm


@pytest.mark.parametrize("train_bn", [False, True])
def test_train_bn_switch_sets_frozen(train_bn):
    layer = bb.batch_norm(TinyConfig().copy(TRAIN_BN=train_bn), "bn_y", epsilon=1e-3)
    assert type(layer) is bb.FrozenableBatchNorm and layer.frozen is (not train_bn)


def test_frozen_backbone_ignores_the_training_flag():
    model = backbone_model("efficientnet_lite0")  # TinyConfig: TRAIN_BN = False
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 49 and all(type(layer) is bb.FrozenableBatchNorm for layer in bns)
    assert {layer.frozen for layer in bns} == {True}
    # Run the stem and stage 2 only (C2): 9 BN layers, a fraction of the ops.
    c2 = keras.Model(model.input, model.get_layer("lite0_stage2_block2_out").output)
    images = np.random.default_rng(2).normal(size=(2, SIDE, SIDE, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(c2(images, training=True)),
                               np.asarray(c2(images, training=False)), atol=1e-5)


@pytest.mark.parametrize("mode, distribution, std", [
    ("fan_avg", "uniform", np.sqrt(2.0 / (9 * 64 + 9 * 128))),  # glorot_uniform
    ("fan_out", "truncated_normal", np.sqrt(2.0 / (9 * 128))),  # EfficientNet's, scale 2
])
def test_host_variance_scaling_matches_keras_variance(mode, distribution, std):
    scale = 1.0 if mode == "fan_avg" else 2.0
    init = bb.HostVarianceScaling(scale, mode, distribution, seed=3)
    values = init((3, 3, 64, 128), "float32")
    assert values.dtype == np.float32 and values.shape == (3, 3, 64, 128)
    assert abs(values.std() / std - 1) < 0.02
    if distribution == "truncated_normal":
        assert np.abs(values).max() <= 2 * std / 0.87962566103423978 + 1e-6
    np.testing.assert_array_equal(values, init((3, 3, 64, 128)))  # a seed repeats its draw
    assert bb.HostVarianceScaling(**init.get_config()).get_config() == init.get_config()
    with pytest.raises(ValueError, match="mode must be fan_in, fan_out or fan_avg"):
        bb.HostVarianceScaling(1.0, "fan_sum")


def test_stage_regex_selects_stride_levels():
    resnet = TinyConfig().copy(BACKBONE="resnet50")

    def selected(model, config, stage):
        pattern = bb.backbone_stage_regex(config, stage)
        return [layer.name for layer in model.layers
                if layer.weights and re.fullmatch(pattern, layer.name)]

    model = backbone_model("resnet50")
    counts = {stage: len(selected(model, resnet, stage)) for stage in ("5+", "4+", "3+", 2, 1)}
    # conv + BN per conv: stage 5 has 10 convs, stage 4 has 19, stage 3 has 13, stage 2 has 10.
    assert counts == {"5+": 20, "4+": 58, "3+": 84, 2: 104, 1: 106}
    assert re.fullmatch(bb.backbone_stage_regex(resnet, "4+"), "bn4a_branch1")
    assert not re.fullmatch(bb.backbone_stage_regex(resnet, "4+"), "res3d_branch2c")

    lite = TinyConfig()
    lite_model = backbone_model("efficientnet_lite0")
    five = selected(lite_model, lite, "5+")
    assert len(five) == 5 * 3 * 2 + 2  # blocks 11..15 (expand, dw, project, each + BN), head
    assert all(int(m.group(1)) >= 11 for name in five
               if (m := re.search(r"_block(\d+)_", name)))
    assert len(selected(lite_model, lite, 1)) == 98
    with pytest.raises(ValueError, match="stage must be 1..5"):
        bb.backbone_stage_regex(lite, "6+")


def test_unknown_backbone_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown BACKBONE 'vgg16'"):
        bb.build_backbone(keras.Input((64, 64, 3)), types.SimpleNamespace(BACKBONE="vgg16"))


def test_torchvision_layout_resnet_is_v1_5_without_biases():
    """LAYOUT "torchvision": stride on the 3x3 (padded 1 on both sides, then valid), no conv
    bias, batch-norm eps 1e-5, max-pool padded 1 on both sides; same names and tap shapes."""
    from mrcnn_kp.config import TorchvisionKeypointConfig

    config = TorchvisionKeypointConfig(IMAGE_MAX_DIM=64, IMAGE_MIN_DIM=64,
                                       IMAGE_RESIZE_MAX_SIDE=64)
    model = bb.build_backbone_model(config)
    shapes = weighted_layers(model)
    assert shapes["conv1"] == [(7, 7, 3, 64)]  # no bias
    assert shapes["res3a_branch2b"] == [(3, 3, 128, 128)]
    assert model.get_layer("res3a_branch2a").strides == (1, 1)
    assert model.get_layer("res3a_branch2b").strides == (2, 2)
    assert model.get_layer("res3a_branch2b").padding == "valid"
    assert model.get_layer("res3a_branch2b_pad").padding == ((1, 1), (1, 1))
    assert model.get_layer("res3a_branch1").strides == (2, 2)
    assert model.get_layer("pool1_pad").padding == ((1, 1), (1, 1))
    assert model.get_layer("bn_conv1").epsilon == 1e-5
    assert bb.resnet_bn_epsilon(config.copy(BACKBONE_BN_EPSILON=0.0)) == 0.0  # COCO_V1's
    assert bb.resnet_bn_epsilon(types.SimpleNamespace(LAYOUT="matterport")) == 1e-3
    expected = matterport_resnet50_weights()
    assert set(shapes) == set(expected)
    assert all(shapes[name] == expected[name][:1] for name in shapes if name.startswith("res"))
    images = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype("float32")
    assert [f.shape[1] for f in predict(model, images)] == [16, 8, 4, 2]


def test_torchvision_valid_region_zeroes_beyond_the_padded_image():
    """TorchvisionValidRegion: zero beyond the image's size padded to 32 (or the image itself
    with divisor 1), at the map's stride; the image is at the canvas' top-left corner."""
    from model_batches import image_meta

    from mrcnn_kp.config import TorchvisionKeypointConfig

    config = TorchvisionKeypointConfig(IMAGE_MAX_DIM=128, IMAGE_MIN_DIM=64,
                                       IMAGE_RESIZE_MAX_SIDE=128)
    meta = np.stack([image_meta(config, window=(0, 0, 100, 70)),
                     image_meta(config, window=(0, 0, 128, 128))])
    x = keras.Input((32, 32, 2))
    m = keras.Input(meta.shape[1:])
    model = keras.Model([x, m], [bb.TorchvisionValidRegion(128)(x, m),
                                 bb.TorchvisionValidRegion(128, 1)(x, m)])
    ones = np.ones((2, 32, 32, 2), np.float32)
    padded, exact = [np.asarray(o) for o in model.predict_on_batch([ones, meta])]
    assert padded[0, :, :24].min() == 1 and padded[0, :, 24:].max() == 0  # 96 / 4 columns
    assert padded[0].sum() == 32 * 24 * 2 and padded[1].min() == 1
    assert exact[0, :25, :18].min() == 1 and exact[0].sum() == 25 * 18 * 2  # ceil(100/4), 70/4
