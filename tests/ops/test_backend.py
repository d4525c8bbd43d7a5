"""mrcnn_kp.ops.backend.tune_cpu_threads and the allocator default set on import."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.tf_only

PROBE = """
import os, sys
import mrcnn_kp
from mrcnn_kp.ops.backend import tune_cpu_threads
print(os.environ["TF_CPU_ALLOCATOR_USE_BFC"])
print(tune_cpu_threads(sys.argv[1]))
import tensorflow as tf
print(tf.config.threading.get_intra_op_parallelism_threads(),
      tf.config.threading.get_inter_op_parallelism_threads())
tf.constant(1.0) + 1.0  # the runtime starts: now it is too late to change
print(tune_cpu_threads("3,3"))
"""


def probe(setting, **env):
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
    environment.update(KERAS_BACKEND="tensorflow", **env)
    done = subprocess.run([sys.executable, "-c", PROBE, setting], capture_output=True,
                          text=True, env=environment, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split("\n")[:4]


def test_explicit_threads_are_applied_before_the_runtime_starts_and_refused_after():
    assert probe("1,2") == ["true", "(1, 2)", "1 2", "None"]


def test_default_leaves_tensorflow_alone_and_the_allocator_opt_out_is_kept():
    assert probe("default", TF_CPU_ALLOCATOR_USE_BFC="false") == ["false", "None", "0 0", "None"]


def test_a_malformed_setting_is_a_clear_error():
    from mrcnn_kp.ops.backend import tune_cpu_threads

    with pytest.raises(ValueError, match="MRCNN_KP_TF_THREADS must be 'auto', 'default' or "
                                         "'intra,inter', got 'two'"):
        tune_cpu_threads("two")
