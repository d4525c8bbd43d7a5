"""mrcnn_kp.runtime: the dtype policy a config names, tune_cpu_threads, and the allocator
default set on import."""
import os
import subprocess
import sys

import keras
import pytest

from mrcnn_kp.config import TinyConfig
from mrcnn_kp.runtime import apply_mixed_precision, mixed_precision_policy, tune_cpu_threads


# ------------------------------------------------------------------ dtype policy
@pytest.mark.parametrize("value, policy", [(False, "float32"), (True, "mixed_float16"),
                                           ("mixed_bfloat16", "mixed_bfloat16")])
def test_mixed_precision_setting_names_a_keras_policy(value, policy):
    assert mixed_precision_policy(TinyConfig(MIXED_PRECISION=value)) == policy


def test_unknown_mixed_precision_setting_is_refused():
    with pytest.raises(ValueError, match="MIXED_PRECISION must be"):
        mixed_precision_policy(TinyConfig(MIXED_PRECISION="int8"))


def test_apply_sets_the_global_policy_and_leaves_float32_alone():
    before = keras.mixed_precision.dtype_policy()
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        assert apply_mixed_precision(TinyConfig()) == "float32"
        assert keras.mixed_precision.dtype_policy().name == "mixed_bfloat16"  # untouched
        assert apply_mixed_precision(TinyConfig(MIXED_PRECISION="mixed_float16")) == \
            "mixed_float16"
        assert keras.mixed_precision.dtype_policy().name == "mixed_float16"
    finally:
        keras.mixed_precision.set_global_policy(before)


# ------------------------------------------------------------------ CPU threads
PROBE = """
import os, sys
import mrcnn_kp
from mrcnn_kp.runtime import tune_cpu_threads
print(os.environ["TF_CPU_ALLOCATOR_USE_BFC"])
canvas = int(sys.argv[2]) if len(sys.argv) > 2 else None
print(tune_cpu_threads(sys.argv[1], canvas=canvas))
import tensorflow as tf
print(tf.config.threading.get_intra_op_parallelism_threads(),
      tf.config.threading.get_inter_op_parallelism_threads())
tf.constant(1.0) + 1.0  # the runtime starts: now it is too late to change
print(tune_cpu_threads("3,3"))
"""


def probe(setting, *extra, **env):
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
    environment.update(KERAS_BACKEND="tensorflow", **env)
    done = subprocess.run([sys.executable, "-c", PROBE, setting, *extra], capture_output=True,
                          text=True, env=environment, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split("\n")[:4]


@pytest.mark.tf_only
def test_explicit_threads_are_applied_before_the_runtime_starts_and_refused_after():
    assert probe("1,2") == ["true", "(1, 2)", "1 2", "None"]


@pytest.mark.tf_only
def test_default_leaves_tensorflow_alone_and_the_allocator_opt_out_is_kept():
    assert probe("default", TF_CPU_ALLOCATOR_USE_BFC="false") == ["false", "None", "0 0", "None"]


@pytest.mark.tf_only
def test_a_malformed_setting_is_a_clear_error():
    with pytest.raises(ValueError, match="MRCNN_KP_TF_THREADS must be 'auto', 'default' or "
                                         "'intra,inter', got 'two'"):
        tune_cpu_threads("two")


@pytest.mark.tf_only
@pytest.mark.skipif((os.cpu_count() or 1) > 4, reason="auto tunes machines of <= 4 cores only")
def test_auto_tunes_small_models_only():
    cores = os.cpu_count() or 1
    assert probe("auto", "384")[1:3] == [f"(1, {cores})", f"1 {cores}"]  # a CPU preset's canvas
    assert probe("auto", "1024")[1:3] == ["None", "0 0"]  # ResNet-50 at 1024: TF's default
    assert probe("auto")[1:3] == ["None", "0 0"]  # canvas unknown: TF's default
