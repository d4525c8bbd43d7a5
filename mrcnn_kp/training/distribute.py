"""Data-parallel training on the engines that exist: tf.distribute.MirroredStrategy (one
machine) and MultiWorkerMirroredStrategy (several, when TF_CONFIG names a cluster) on the
TensorFlow backend, keras.distribution.DataParallel on JAX (over all processes once
jax.distributed is initialised: see training.jax_cluster).

config.GPU_COUNT replicas per worker each take IMAGES_PER_GPU images; config.BATCH_SIZE is the
batch one worker's data pipeline yields, split across its replicas by the engine; the global
batch is BATCH_SIZE x the number of workers. Build the model, compile and fit inside
`scope(strategy)` (the Trainer and MaskRCNN do this).

    strategy = make_strategy(config)                 # None for one device of one worker
    with scope(strategy):
        model = build_training_model(config)
    shard = worker_shard(strategy)                   # (num_workers, worker_index)

Multi-worker TensorFlow: make the strategy before any other TensorFlow op runs (MaskRCNN does
it first). MRCNN_KP_COLLECTIVE_TIMEOUT (seconds, default 600) bounds how long a step waits for
a worker that stopped answering before it fails with WorkerLost (on JAX it is the heartbeat
timeout of jax.distributed: training.jax_cluster).

MRCNN_KP_WORKER_CHECKPOINT_DIR: a folder where a worker other than the chief keeps its own copy
of each checkpoint (which it otherwise writes to a temporary folder and deletes), to compare
its weights with the chief's.
"""
import contextlib
import json
import os

import keras

COLLECTIVE_TIMEOUT_S = 600.0
COLLECTIVE_TIMEOUT_ENV = "MRCNN_KP_COLLECTIVE_TIMEOUT"
WORKER_CHECKPOINT_DIR_ENV = "MRCNN_KP_WORKER_CHECKPOINT_DIR"


class WorkerLost(RuntimeError):
    """A worker of the cluster stopped answering (killed, crashed, network gone): the
    collective step could not finish. The chief's last checkpoint is intact; restart every
    worker with --resume last."""


def tf_cluster(environ=None):
    """(num_workers, task_type, task_index) from TF_CONFIG, or None when it names no cluster.

    The chief counts as a worker; an evaluator does not. Raises ValueError for TF_CONFIG that
    is not the JSON tf.distribute reads.
    """
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        spec = json.loads(text)
        cluster = spec.get("cluster") or {}
        task = spec.get("task") or {}
        count = sum(len(cluster.get(kind, ())) for kind in ("chief", "worker"))
        task_type, index = task.get("type"), int(task.get("index", 0))
    except (ValueError, AttributeError, TypeError) as error:
        raise ValueError(f"TF_CONFIG is not tf.distribute's cluster JSON "
                         f"({{'cluster': {{'worker': [...]}}, 'task': {{...}}}}): {error}") \
            from None
    if count == 0:
        return None
    if task_type not in ("chief", "worker"):
        raise ValueError(f"TF_CONFIG task type {task_type!r}: training runs on 'chief' and "
                         f"'worker' tasks")
    if index >= len(cluster.get(task_type, ())):
        raise ValueError(f"TF_CONFIG task index {index} but the cluster lists "
                         f"{len(cluster.get(task_type, ()))} {task_type} task(s)")
    return count, task_type, index


def make_strategy(config, devices=None):
    """The distribution for config.GPU_COUNT replicas, or None for one device.

    devices: explicit device names ("/gpu:0", "/cpu:1" on TF; jax devices or their string
    names on JAX). Default: the first GPU_COUNT GPUs, else as many logical CPU devices (on TF
    make them with `tf.config.set_logical_device_configuration` before anything else runs; on
    JAX with XLA_FLAGS=--xla_force_host_platform_device_count=N).
    """
    count = int(config.GPU_COUNT)
    backend = keras.backend.backend()
    if backend == "tensorflow" and devices is None and tf_cluster() is not None:
        return _multi_worker_strategy()
    if backend == "jax" and devices is None and _jax_process_count() > 1:
        parallel = keras.distribution.DataParallel()  # every device of every process
        parallel.auto_shard_dataset = False  # each process reads its shard (worker_shard)
        return parallel
    if devices is None and count <= 1:
        return None
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


def _multi_worker_strategy():
    import tensorflow as tf

    timeout = float(os.environ.get(COLLECTIVE_TIMEOUT_ENV, COLLECTIVE_TIMEOUT_S))
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def _jax_process_count():
    if keras.backend.backend() != "jax":
        return 1
    import jax

    return int(jax.process_count())


def is_multi_worker(strategy):
    return worker_shard(strategy)[0] > 1


def worker_shard(strategy):
    """(num_workers, worker_index) of this process: (1, 0) on one machine."""
    if strategy is None:
        return 1, 0
    extended = getattr(strategy, "extended", None)
    if extended is not None and hasattr(extended, "_num_workers"):  # MultiWorkerMirrored
        resolver = strategy.cluster_resolver
        count = int(extended._num_workers)
        if count <= 1:
            return 1, 0
        index = int(resolver.task_id)
        if resolver.task_type == "worker" and "chief" in resolver.cluster_spec().as_dict():
            index += 1  # the chief is worker 0
        return count, index
    if keras.backend.backend() == "jax" and _jax_process_count() > 1:
        import jax

        return int(jax.process_count()), int(jax.process_index())
    return 1, 0


def is_chief(strategy):
    """Whether this process writes checkpoints, logs and the run's config (worker 0)."""
    return worker_shard(strategy)[1] == 0


def distribute_batches(strategy, batches):
    """A PyDataset of this worker's batches as the input `fit` takes under the strategy.

    Multi-worker TensorFlow: a tf.distribute dataset made per worker, so each worker feeds its
    own batches (its shard) to its replicas; Keras' own conversion would treat them as global
    batches and split them between workers. `batches.batch(epoch, index)` gives batch `index`
    of `epoch`, read when the epoch's iteration starts (after on_epoch_begin). Anything else:
    `batches` unchanged.
    """
    if keras.backend.backend() != "tensorflow" or not is_multi_worker(strategy):
        return batches
    import numpy as np
    import tensorflow as tf

    first = batches.batch(batches.epoch, 0)
    spec = tf.nest.map_structure(
        lambda a: tf.TensorSpec((None,) + np.shape(a)[1:], tf.as_dtype(np.asarray(a).dtype)),
        first)
    steps = len(batches)

    def generate():
        epoch = batches.epoch  # on_epoch_begin has set it when iteration starts
        for index in range(steps):
            yield batches.batch(epoch, index)

    def dataset_fn(context):
        local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
        dataset = tf.data.Dataset.from_generator(generate, output_signature=spec)
        if local_replicas > 1:
            size = int(np.shape(tf.nest.flatten(first)[0])[0])
            dataset = dataset.rebatch(size // local_replicas)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps * local_replicas))
        return dataset.prefetch(2)

    return strategy.distribute_datasets_from_function(dataset_fn)


@contextlib.contextmanager
def fitting(strategy, model):
    """Context for `model.fit(distribute_batches(...))` under a multi-worker TensorFlow
    strategy, around two things Keras' TensorFlow trainer gets wrong there: its build from the
    first batch reduces a dict of per-replica inputs across workers, which tf.distribute cannot
    (the model and its optimizer are built here instead, so it is skipped), and it averages
    each step's logs across workers along axis 0, which a scalar lacks (the steps' scalar logs
    get a length-1 axis, which that mean removes). Elsewhere: nothing."""
    if keras.backend.backend() != "tensorflow" or not is_multi_worker(strategy):
        yield
        return
    if not all(layer.built for layer in model._flatten_layers()):
        raise RuntimeError("multi-worker training needs a built model (a functional model, or "
                           "one called once on a batch)")
    with strategy.scope():
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    model.train_step = _with_axis(model.train_step)
    model.test_step = _with_axis(model.test_step)
    model.train_function = model.test_function = None  # traced again with the steps above
    try:
        yield
    finally:
        for name in ("_maybe_symbolic_build", "train_step", "test_step"):
            del model.__dict__[name]
        model.train_function = model.test_function = None


def _with_axis(step):
    def step_with_axis(data):
        logs = step(data)
        return keras.tree.map_structure(
            lambda v: keras.ops.reshape(v, (1,)) if len(keras.ops.shape(v)) == 0 else v, logs)

    return step_with_axis


def lost_worker_error(error):
    """WorkerLost for an error of a collective step that means a peer is gone, else None.

    TensorFlow: the transport's UnavailableError, DeadlineExceededError (the collective
    timeout), CancelledError, AbortedError, InternalError. JAX: a JaxRuntimeError from the
    gloo collectives ("Gloo all-reduce failed: ... Connection closed by peer", at once when a
    peer process dies) or with an UNAVAILABLE / DEADLINE_EXCEEDED / ABORTED / CANCELLED
    status; another JaxRuntimeError (out of memory, a bad shape) stays what it is.
    """
    if keras.backend.backend() == "jax":
        lost = _jax_peer_error(error)
    else:
        lost = _tf_peer_error(error)
    if not lost:
        return None
    return WorkerLost(f"a worker of the cluster stopped answering during a training step "
                      f"({type(error).__name__}: {str(error).splitlines()[0][:300]}); the "
                      f"chief's last checkpoint is intact: restart every worker with "
                      f"--resume last")


JAX_PEER_STATUSES = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "CANCELLED")


def _jax_peer_error(error):
    try:
        from jax.errors import JaxRuntimeError
    except ImportError:
        return False
    if not isinstance(error, JaxRuntimeError):
        return False
    text = str(error)
    return "gloo" in text.lower() or text.split(":", 1)[0].strip() in JAX_PEER_STATUSES


def _tf_peer_error(error):
    try:
        import tensorflow as tf
    except ImportError:
        return False
    kinds = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
             tf.errors.CancelledError, tf.errors.AbortedError, tf.errors.InternalError)
    return isinstance(error, kinds)


def worker_checkpoint_dir(environ=None):
    """The folder named by MRCNN_KP_WORKER_CHECKPOINT_DIR, where a worker other than the chief
    keeps its copy of each checkpoint; None (the default): a temporary folder, deleted."""
    return (os.environ if environ is None else environ).get(WORKER_CHECKPOINT_DIR_ENV) or None


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
