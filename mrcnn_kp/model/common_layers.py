"""Layers and initialisers the whole model shares: FrozenableBatchNorm (one TRAIN_BN switch for
backbone and heads), `batch_norm`, and HostVarianceScaling.

Initial weights are drawn with numpy (`HostVarianceScaling`): on JAX a backend initialiser
compiles one RNG program per weight shape, so EfficientNet-Lite0 would take about 40 s to build
there, with numpy about 6 s.
"""
import math

import keras
import numpy as np
from keras import layers


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class FrozenableBatchNorm(layers.BatchNormalization):
    """BatchNormalization that can be frozen: `frozen=True` always runs in inference mode.

    Frozen (matterport's `train_bn=False`, our `config.TRAIN_BN = False`), the layer normalises
    with its moving statistics and never updates them, even inside `fit` or when called with
    `training=True`; gamma and beta still train when the layer is trainable. Small detection
    batches give poor batch statistics, hence the default. Unfrozen, it is a plain
    BatchNormalization. Heads import it from here so the whole model shares one switch.
    """

    def __init__(self, frozen=False, **kwargs):
        super().__init__(**kwargs)
        self.frozen = bool(frozen)

    def call(self, inputs, training=None, mask=None):
        if self.frozen:
            training = False
        return super().call(inputs, training=training, mask=mask)

    def get_config(self):
        config = super().get_config()
        config["frozen"] = self.frozen
        return config


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class HostVarianceScaling(keras.initializers.Initializer):
    """keras.initializers.VarianceScaling, drawn with numpy on the host.

    The same distributions and fan rules as Keras (glorot_uniform is
    `HostVarianceScaling(1.0, "fan_avg", "uniform")`), but no backend kernel: on JAX each new
    shape drawn by a backend initializer compiles its own RNG program (about 1 s per shape on 2
    CPU cores, 40 s for the 49 shapes of EfficientNet-Lite0). Draws come from numpy's global
    generator, which keras.utils.set_random_seed seeds, or from `seed` when given.
    """

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"mode must be fan_in, fan_out or fan_avg, got {mode!r}")
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(f"distribution must be truncated_normal, untruncated_normal or "
                             f"uniform, got {distribution!r}")
        self.scale, self.mode, self.distribution, self.seed = float(scale), mode, distribution, seed

    def __call__(self, shape, dtype=None):
        shape = tuple(int(d) for d in shape)
        receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
        fan_in = shape[-2] * receptive if len(shape) > 1 else (shape[0] if shape else 1)
        fan_out = shape[-1] * receptive if shape else 1
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = self.scale / max(1.0, fan)
        rng = np.random.default_rng(self.seed) if self.seed is not None else np.random
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            values = rng.uniform(-limit, limit, size=shape)
        elif self.distribution == "untruncated_normal":
            values = rng.standard_normal(size=shape) * math.sqrt(variance)
        else:  # normal cut at 2 sigma, rescaled to keep the variance (Keras' constant)
            values = rng.standard_normal(size=shape)
            outside = np.abs(values) > 2.0
            while outside.any():
                values[outside] = rng.standard_normal(size=int(outside.sum()))
                outside = np.abs(values) > 2.0
            values *= math.sqrt(variance) / 0.87962566103423978
        return values.astype(keras.backend.standardize_dtype(dtype or "float32"))

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution,
                "seed": self.seed}


def glorot_uniform():
    """Keras' default conv initialiser (matterport's), host-drawn: see HostVarianceScaling."""
    return HostVarianceScaling(1.0, "fan_avg", "uniform")


def batch_norm(config, name, epsilon=1e-3, momentum=None):
    """The model's batch-norm layer: frozen unless config.TRAIN_BN; momentum of its moving
    statistics config.BN_MOMENTUM unless given."""
    momentum = config.BN_MOMENTUM if momentum is None else momentum
    return FrozenableBatchNorm(frozen=not config.TRAIN_BN, epsilon=epsilon, momentum=momentum,
                               name=name)
