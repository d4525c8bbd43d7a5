"""Helpers for the ops tests: run an op the way the model runs it.

Under JAX, op-by-op (eager) execution compiles every primitive separately, which costs seconds
per call; the model always runs these ops inside a compiled function, so the tests do too.
Under TensorFlow, eager execution is fast and is what the data pipeline's numpy-facing calls use.
"""
import functools

import keras
import pytest


@pytest.fixture(scope="session")
def compiled():
    """compiled(fn, **static_kwargs) -> fn with those arguments bound, jit-compiled on JAX."""

    def wrap(fn, **static_kwargs):
        bound = functools.partial(fn, **static_kwargs)
        if keras.backend.backend() == "jax":
            import jax

            return jax.jit(bound)
        return bound

    return wrap
