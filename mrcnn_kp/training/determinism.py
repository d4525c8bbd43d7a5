"""Seeded, deterministic training: the same seed gives bitwise the same weights.

    seed_everything(7)      # before the model is built: weight init, ROI sampling, op order

`keras.utils.set_random_seed` seeds Python's `random`, NumPy's global generator, TensorFlow's
global seed and Keras' own generator, from which every layer's initializer and the ROI
sampler's SeedGenerator draw their seeds when the model is built. On TensorFlow,
`tf.config.experimental.enable_op_determinism` then makes every kernel choose one reduction
order (and raises for an op that has no deterministic version). The data pipeline
(mrcnn_kp.data.pipeline) needs neither: each batch is a pure function of (seed, epoch, batch
index), whatever the threads.

What stays outside: JAX on GPU (XLA's GPU reductions and scatters use atomics unless
XLA_FLAGS=--xla_gpu_deterministic_ops=true is set before JAX starts), results across machines
or thread counts (a CPU kernel's reduction order depends on how many threads split it), and
`use_multiprocessing` data workers (seeded, so still deterministic, but outside this
process' RNG).
"""
import keras

from mrcnn_kp.utils import get_logger

log = get_logger("mrcnn_kp.training")


def seed_everything(seed, deterministic_ops=True):
    """Seed every generator a training run draws from; on TensorFlow also turn on op
    determinism (process-wide; `deterministic_ops=False` leaves it as it is)."""
    seed = int(seed)
    keras.utils.set_random_seed(seed)
    if deterministic_ops and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    log.info("seed %d%s", seed, ", deterministic TensorFlow ops" if deterministic_ops and
             keras.backend.backend() == "tensorflow" else "")
    return seed


def seed_generators(model):
    """Every keras.random.SeedGenerator of `model`'s layers, in layer order (the ROI sampler's):
    their state is what a resumed run must restore to draw the same samples."""
    found, seen = [], set()
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for generator in getattr(layer, "_seed_generators", ()):
            if id(generator) not in seen:
                seen.add(id(generator))
                found.append(generator)
    return found


def seed_generator_states(model):
    """[[int, ...]] the current state of each of seed_generators(model) (JSON-friendly)."""
    return [[int(v) for v in keras.ops.convert_to_numpy(g.state.value).ravel()]
            for g in seed_generators(model)]


def restore_seed_generator_states(model, states):
    """Assign saved states back (same model config, so the same generators in the same order).
    Returns how many were restored; a count that differs is logged and leaves them fresh."""
    generators = seed_generators(model)
    if len(states) != len(generators):
        log.warning("the checkpoint has %d random-generator states, the model %d: ROI sampling "
                    "starts afresh", len(states), len(generators))
        return 0
    import numpy as np

    for generator, state in zip(generators, states):
        variable = generator.state
        generator.state.assign(np.asarray(state, dtype=variable.dtype).reshape(variable.shape))
    return len(generators)
