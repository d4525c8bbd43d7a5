"""Shared parametrisation for the ops tests (a plain module: conftest is not importable by name
when several test folders have one)."""
import keras
import pytest


def fast_path_params():
    """Parameters use_fast_path=True/False; on a backend without fast paths (JAX) the two run
    the same code, so the True case is skipped there."""
    no_fast_path = keras.backend.backend() != "tensorflow"
    marks = [pytest.mark.skip(reason="no fast path on this backend: same as keras_ops")
             ] if no_fast_path else []
    return [pytest.param(True, id="fast_path", marks=marks),
            pytest.param(False, id="keras_ops")]
