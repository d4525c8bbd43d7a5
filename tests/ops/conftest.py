"""Helpers for the ops tests: run an op the way the model runs it.

Under JAX, op-by-op (eager) execution compiles every primitive separately, which costs seconds
per call; the model always runs these ops inside a compiled function, so the tests do too.
Under TensorFlow, eager execution is fast and is what the data pipeline's direct calls use;
graph=True traces the op into a tf.function (graph mode without XLA, as Keras runs models on
CPU), which a few tests per op use so both TF modes are covered.
"""
import functools

import keras
import pytest


@pytest.fixture(scope="session")
def compiled():
    """compiled(fn, graph=False, **static_kwargs) -> fn with those arguments bound, jit-compiled
    on JAX, a tf.function on TensorFlow when graph=True."""

    def wrap(fn, graph=False, **static_kwargs):
        bound = functools.partial(fn, **static_kwargs)
        if keras.backend.backend() == "jax":
            import jax

            return jax.jit(bound)
        if graph and keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            return tf.function(bound)
        return bound

    return wrap


class _OpLayer(keras.layers.Layer):
    """Calls one op, the way the model's layers do (for symbolic-batch tests)."""

    def __init__(self, fn, **kwargs):
        super().__init__(**kwargs)
        self.fn = fn

    def call(self, *inputs):
        return self.fn(*inputs)


@pytest.fixture(scope="session")
def in_keras_model():
    """in_keras_model(fn, *arrays) -> (symbolic output shapes, outputs of predict): fn is
    called on keras.Input tensors whose batch size is unknown, then run on the arrays."""

    def run(fn, *arrays):
        inputs = [keras.Input(a.shape[1:], dtype=str(a.dtype)) for a in arrays]
        outputs = _OpLayer(fn)(*inputs)
        model = keras.Model(inputs, outputs)
        shapes = keras.tree.map_structure(lambda t: tuple(t.shape), model.outputs)
        return shapes, model.predict_on_batch(list(arrays))

    return run
