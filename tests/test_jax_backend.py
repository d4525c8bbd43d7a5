"""Re-run the backend-sensitive tests (tests/ops, tests/model) under KERAS_BACKEND=jax.

Keras fixes its backend when first imported, so the second backend needs its own process. This
test is how the suite proves that the ops and the model run on JAX as well as TensorFlow.
Tests that only make sense on TensorFlow carry `@pytest.mark.tf_only`.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JAX_SUITES = ["tests/ops", "tests/model"]


@pytest.mark.backend_subprocess
def test_ops_and_model_pass_on_jax():
    pytest.importorskip("jax", reason="jax is part of the test extra: pip install -e '.[test]'")
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "jax":
        pytest.skip("already running on the JAX backend")
    suites = [s for s in JAX_SUITES if (ROOT / s).is_dir()]
    if not suites:
        pytest.skip("no backend-sensitive test folders yet")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not tf_only",
         *suites],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500,
    )
    tail = (proc.stdout + proc.stderr)[-6000:]
    # exit code 5 = nothing collected; anything else non-zero is a failure on JAX
    assert proc.returncode in (0, 5), f"tests failed on the JAX backend:\n{tail}"
    assert "passed" in proc.stdout or proc.returncode == 5, tail
