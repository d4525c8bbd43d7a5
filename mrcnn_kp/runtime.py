"""Process-wide set-up that must happen before a model is built or TensorFlow starts: the
Keras dtype policy a config asks for, and TensorFlow's CPU thread pools.

Training, inference and the commands all call it, so it sits just above the config, below
every layer that builds a model.
"""
import os

import keras

SMALL_CPU_CORES = 4
# "auto" tunes the threads for models whose canvas is at most this: small ops gain from one op
# per core; large ones (ResNet-50 at 1088 px) need both cores inside each conv.
SMALL_CANVAS = 512


# ------------------------------------------------------------------ dtype policy
def mixed_precision_policy(config):
    """The Keras dtype policy name that config.MIXED_PRECISION asks for.

    False/None/"float32" -> "float32"; True or "mixed_float16" -> "mixed_float16";
    "mixed_bfloat16" -> "mixed_bfloat16".
    """
    value = config.MIXED_PRECISION
    if value in (False, None, "", "float32"):
        return "float32"
    if value is True or value in ("float16", "mixed_float16"):
        return "mixed_float16"
    if value in ("bfloat16", "mixed_bfloat16"):
        return "mixed_bfloat16"
    raise ValueError(f"MIXED_PRECISION must be False, True, 'mixed_float16' or 'mixed_bfloat16', "
                     f"got {value!r}")


def apply_mixed_precision(config):
    """Set Keras' global dtype policy to what config.MIXED_PRECISION asks for (left as it is
    for float32), before a model is built; returns the policy name."""
    policy = mixed_precision_policy(config)
    if policy != "float32":
        keras.mixed_precision.set_global_policy(policy)
    return policy


# ------------------------------------------------------------------ CPU threads
def tune_cpu_threads(setting=None, canvas=None):
    """TensorFlow thread pools for a small CPU, before the runtime starts; what was applied.

    On <= 4 cores without a GPU build, for a small model (canvas, the config's IMAGE_MAX_DIM,
    <= SMALL_CANVAS), one thread per op and one op per core (intra 1, inter = cores) beats
    TensorFlow's default (both = cores, which oversubscribes): 1.25 s against 1.5 s per
    training step of the demo model on 2 cores (docs/RESULTS.md). For a large one it loses (the
    default config at 1088 px: 28.3 s against 21.4 s per training step), so "auto" leaves
    TensorFlow's default
    when canvas is larger or unknown. setting (or the environment variable MRCNN_KP_TF_THREADS):
    "intra,inter" to choose, "default" to leave TensorFlow's. Returns (intra, inter), or None
    when nothing was changed.
    """
    setting = setting if setting is not None else os.environ.get("MRCNN_KP_TF_THREADS", "auto")
    if keras.backend.backend() != "tensorflow" or setting == "default":
        return None
    if setting == "auto" and (canvas is None or canvas > SMALL_CANVAS):
        return None
    import tensorflow as tf

    if setting == "auto":
        cores = os.cpu_count() or 1
        if cores > SMALL_CPU_CORES or tf.test.is_built_with_cuda():
            return None
        intra, inter = 1, cores
    else:
        try:
            intra, inter = (int(v) for v in setting.split(","))
        except ValueError:
            raise ValueError(f"MRCNN_KP_TF_THREADS must be 'auto', 'default' or 'intra,inter', "
                             f"got {setting!r}") from None
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # the runtime already started: too late, keep what it has
        return None
    return intra, inter
