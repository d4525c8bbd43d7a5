"""mrcnn_kp.model.common_layers: frozen batch norm (and the TRAIN_BN switch), host-drawn variance
scaling."""
import keras
import numpy as np
import pytest

from backbone_models import SIDE, backbone_model

from mrcnn_kp.config import TinyConfig
from mrcnn_kp.model.common_layers import batch_norm, FrozenableBatchNorm, HostVarianceScaling


def _tiny_bn_model(frozen):
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(2, 1, name="conv")(inputs)
    x = FrozenableBatchNorm(frozen=frozen, name="bn")(x)
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
    layer = FrozenableBatchNorm(frozen=True, epsilon=1e-3, name="bn_x")
    restored = FrozenableBatchNorm.from_config(layer.get_config())
    assert restored.frozen is True and restored.epsilon == 1e-3 and restored.name == "bn_x"
    assert keras.saving.get_registered_object("mrcnn_kp>FrozenableBatchNorm") is \
        FrozenableBatchNorm


@pytest.mark.parametrize("train_bn", [False, True])
def test_train_bn_switch_sets_frozen(train_bn):
    layer = batch_norm(TinyConfig().copy(TRAIN_BN=train_bn), "bn_y", epsilon=1e-3)
    assert type(layer) is FrozenableBatchNorm and layer.frozen is (not train_bn)


def test_frozen_backbone_ignores_the_training_flag():
    model = backbone_model("efficientnet_lite0")  # TinyConfig: TRAIN_BN = False
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 49 and all(type(layer) is FrozenableBatchNorm for layer in bns)
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
    init = HostVarianceScaling(scale, mode, distribution, seed=3)
    values = init((3, 3, 64, 128), "float32")
    assert values.dtype == np.float32 and values.shape == (3, 3, 64, 128)
    assert abs(values.std() / std - 1) < 0.02
    if distribution == "truncated_normal":
        assert np.abs(values).max() <= 2 * std / 0.87962566103423978 + 1e-6
    np.testing.assert_array_equal(values, init((3, 3, 64, 128)))  # a seed repeats its draw
    assert HostVarianceScaling(**init.get_config()).get_config() == init.get_config()
    with pytest.raises(ValueError, match="mode must be fan_in, fan_out or fan_avg"):
        HostVarianceScaling(1.0, "fan_sum")
