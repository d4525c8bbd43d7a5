"""Data-parallel training on the engines that exist: tf.distribute.MirroredStrategy on the
TensorFlow backend, keras.distribution.DataParallel on JAX.

config.GPU_COUNT replicas each take IMAGES_PER_GPU images; config.BATCH_SIZE is the global batch
the data pipeline yields, split across replicas by the engine. Build the model, compile and fit
inside `scope(strategy)` (the Trainer and MaskRCNN do this).

    strategy = make_strategy(config)                 # None when GPU_COUNT == 1
    with scope(strategy):
        model = build_training_model(config)
"""
import contextlib

import keras


def make_strategy(config, devices=None):
    """The distribution for config.GPU_COUNT replicas, or None for one device.

    devices: explicit device names ("/gpu:0", "/cpu:1" on TF; jax devices or their string
    names on JAX). Default: the first GPU_COUNT GPUs, else as many logical CPU devices (on TF
    make them with `tf.config.set_logical_device_configuration` before anything else runs; on
    JAX with XLA_FLAGS=--xla_force_host_platform_device_count=N).
    """
    count = int(config.GPU_COUNT)
    if devices is None and count <= 1:
        return None
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if devices is None:
            devices = _tf_devices(tf, count)
        return tf.distribute.MirroredStrategy(devices=list(devices))
    if backend == "jax":
        import jax

        if devices is None:
            available = jax.devices()
            if len(available) < count:
                raise RuntimeError(f"GPU_COUNT={count} but JAX sees {len(available)} device(s): "
                                   f"{available}")
            devices = available[:count]
        return keras.distribution.DataParallel(devices=list(devices))
    raise RuntimeError(f"multi-device training needs the tensorflow or jax backend, not {backend}")


def _tf_devices(tf, count):
    for kind in ("GPU", "CPU"):
        found = tf.config.list_logical_devices(kind)
        if len(found) >= count:
            return [d.name for d in found[:count]]
    raise RuntimeError(
        f"GPU_COUNT={count} but TensorFlow sees {len(tf.config.list_logical_devices('GPU'))} "
        f"GPU(s) and {len(tf.config.list_logical_devices('CPU'))} logical CPU device(s)")


def scope(strategy):
    """Context for building, compiling and fitting under `strategy` (None: no-op)."""
    if strategy is None:
        return contextlib.nullcontext()
    return strategy.scope()


def num_replicas(strategy):
    if strategy is None:
        return 1
    if hasattr(strategy, "num_replicas_in_sync"):
        return int(strategy.num_replicas_in_sync)
    return int(strategy.device_mesh.devices.size)  # keras.distribution.DataParallel
