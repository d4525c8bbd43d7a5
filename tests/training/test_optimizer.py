import keras
import numpy as np
import pytest

from mrcnn_kp.config import TinyConfig
from mrcnn_kp.training.optimizer import NonFiniteGuard, build_optimizer, decayed_variables


def dense_model():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2, name="mrcnn_dense")(inputs)
    model = keras.Model(inputs, outputs)
    return model


def values(model):
    return [keras.ops.convert_to_numpy(w).copy() for w in model.weights]


def make_optimizer(model, **overrides):
    settings = dict(LR_WARMUP_STEPS=0, LR_SCHEDULE="constant", WEIGHT_DECAY=0.0,
                    GRADIENT_CLIP_NORM=0.0, LEARNING_MOMENTUM=0.0)
    settings.update(overrides)
    config = TinyConfig(**settings)
    return build_optimizer(config, 0.1, steps_per_epoch=10, total_epochs=1,
                           trainable_variables=model.trainable_variables)


def test_nan_gradient_skips_the_whole_update():
    model = dense_model()
    optimizer = make_optimizer(model, LEARNING_MOMENTUM=0.9)
    grads = [np.ones((3, 2), np.float32), np.ones((2,), np.float32)]
    optimizer.apply(grads, model.trainable_variables)
    before, momenta = values(model), [keras.ops.convert_to_numpy(v).copy()
                                      for v in optimizer.inner_optimizer.momentums]
    bad = [np.ones((3, 2), np.float32), np.array([1.0, np.nan], np.float32)]
    optimizer.apply(bad, model.trainable_variables)
    for a, b in zip(before, values(model)):
        np.testing.assert_array_equal(a, b)
    for a, v in zip(momenta, optimizer.inner_optimizer.momentums):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(v))
    assert int(optimizer.iterations) == 1
    assert int(optimizer.skipped_steps) == 1
    inf = [np.full((3, 2), np.inf, np.float32), np.ones((2,), np.float32)]
    optimizer.apply(inf, model.trainable_variables)
    assert int(optimizer.skipped_steps) == 2 and int(optimizer.iterations) == 1


def test_finite_update_is_plain_sgd_and_the_loss_is_not_scaled():
    model = dense_model()
    optimizer = make_optimizer(model)
    kernel, bias = values(model)
    optimizer.apply([np.ones((3, 2), np.float32), np.full((2,), 2.0, np.float32)],
                    model.trainable_variables)
    new_kernel, new_bias = values(model)
    np.testing.assert_allclose(new_kernel, kernel - 0.1, rtol=1e-6)
    np.testing.assert_allclose(new_bias, bias - 0.2, rtol=1e-6)
    assert float(optimizer.scale_loss(3.0)) == 3.0


def test_weight_decay_shrinks_kernels_only():
    model = dense_model()
    model.get_layer("mrcnn_dense").bias.assign(np.ones(2, np.float32))
    optimizer = make_optimizer(model, WEIGHT_DECAY=0.5)
    assert [v.name for v in decayed_variables(model.trainable_variables)] == ["kernel"]
    kernel, bias = values(model)
    optimizer.apply([np.zeros((3, 2), np.float32), np.zeros((2,), np.float32)],
                    model.trainable_variables)
    new_kernel, new_bias = values(model)
    np.testing.assert_allclose(new_kernel, kernel * (1 - 0.5 * 0.1), rtol=1e-6)
    np.testing.assert_array_equal(new_bias, bias)


def test_gradients_are_clipped_to_the_global_norm():
    model = dense_model()
    optimizer = make_optimizer(model, GRADIENT_CLIP_NORM=1.0)
    kernel, bias = values(model)
    grads = [np.zeros((3, 2), np.float32), np.array([30.0, 40.0], np.float32)]  # norm 50
    optimizer.apply(grads, model.trainable_variables)
    np.testing.assert_allclose(values(model)[1], bias - 0.1 * np.array([0.6, 0.8]), rtol=1e-5)
    np.testing.assert_array_equal(values(model)[0], kernel)


def test_guard_round_trips_through_get_config():
    model = dense_model()
    optimizer = make_optimizer(model)
    clone = NonFiniteGuard.from_config(optimizer.get_config())
    assert clone.dynamic_loss_scale is False
    assert clone.inner_optimizer.momentum == optimizer.inner_optimizer.momentum


def test_mixed_float16_uses_dynamic_loss_scaling():
    model = dense_model()
    optimizer = make_optimizer(model, MIXED_PRECISION="mixed_float16")
    assert optimizer.dynamic_loss_scale
    assert float(optimizer.scale_loss(1.0)) == 2.0 ** 15


class AdamWConfig(TinyConfig):
    OPTIMIZER = "adamw"


def test_adamw_option_skips_nan_and_its_moments_round_trip_through_the_state():
    from mrcnn_kp.training.checkpoints import optimizer_state, restore_optimizer_state

    model = dense_model()
    config = AdamWConfig(LR_WARMUP_STEPS=0, LR_SCHEDULE="constant", WEIGHT_DECAY=0.0,
                         GRADIENT_CLIP_NORM=0.0)
    optimizer = build_optimizer(config, 0.1, 10, 1, model.trainable_variables)
    assert isinstance(optimizer.inner_optimizer, keras.optimizers.AdamW)
    optimizer.apply([np.ones((3, 2), np.float32), np.ones(2, np.float32)],
                    model.trainable_variables)
    before = values(model)
    optimizer.apply([np.full((3, 2), np.nan, np.float32), np.ones(2, np.float32)],
                    model.trainable_variables)
    for a, b in zip(before, values(model)):
        np.testing.assert_array_equal(a, b)
    state = optimizer_state(optimizer, model)
    assert {"adam_m/0", "adam_m/1", "adam_v/0", "adam_v/1"} <= set(state)
    np.testing.assert_allclose(state["adam_m/1"], 0.1 * np.ones(2))  # (1 - beta_1) * g
    fresh = build_optimizer(config, 0.1, 10, 1, model.trainable_variables)
    restored, left = restore_optimizer_state(fresh, model, state)
    assert "adam_v/0" in restored and not [k for k in left if k.startswith("adam")]
    assert int(fresh.iterations) == 1


def test_unknown_optimizer_is_refused_by_the_config_and_by_build_optimizer():
    from mrcnn_kp.config import ConfigError

    class Odd(TinyConfig):
        OPTIMIZER = "rmsprop"

    with pytest.raises(ConfigError, match="unknown OPTIMIZER 'rmsprop'; choose one of sgd, adamw"):
        Odd()
    config = TinyConfig()
    config.OPTIMIZER = "rmsprop"  # edited after validation
    with pytest.raises(ValueError, match="OPTIMIZER must be one of sgd, adamw"):
        build_optimizer(config, 0.1, 10, 1, dense_model().trainable_variables)
