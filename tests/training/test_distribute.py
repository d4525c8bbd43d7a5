"""Data-parallel training on two logical CPU devices gives the single-device result.

Each backend runs in its own subprocess: the device count must be fixed before TF / JAX start.
"""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

SCRIPT = r"""
import json, os, sys
import keras, numpy as np
backend = keras.backend.backend()
if backend == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from mrcnn_kp.training import distribute
from mrcnn_kp.training.trainer import Trainer
from standin_models import StandinBatches, build_standin_training_model, standin_config

model_dir = sys.argv[1]
results = {}
for gpus in (1, 2):
    # frozen batch-norm: MirroredStrategy normalises each replica's half-batch on its own
    config = standin_config(GPU_COUNT=gpus, IMAGES_PER_GPU=2 // gpus, NAME=f"dp{gpus}",
                            TRAIN_BN=False)
    strategy = distribute.make_strategy(config)
    with distribute.scope(strategy):
        model = build_standin_training_model(config)
    trainer = Trainer(model, config, model_dir=model_dir, strategy=strategy)
    trainer.train(StandinBatches(poison_batches={1}), None, 0.05, 2, "all", verbose=0)
    results[gpus] = {
        "replicas": distribute.num_replicas(strategy),
        "iterations": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "skipped": int(keras.ops.convert_to_numpy(model.optimizer.skipped_steps)),
        "weights": [keras.ops.convert_to_numpy(w).tolist() for w in model.weights],
        "checkpoint": trainer.last_checkpoint,
    }
print("RESULT " + json.dumps(results))
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_two_replicas_train_like_one_device(tmp_path, backend):
    env = dict(os.environ, KERAS_BACKEND=backend,
               PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""),
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=400)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    results = json.loads(lines[0][len("RESULT "):])
    one, two = results["1"], results["2"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    # 2 epochs x 3 steps, the NaN batch appears once in each run and is skipped there
    assert (one["iterations"], one["skipped"]) == (5, 1)
    assert (two["iterations"], two["skipped"]) == (5, 1)
    assert os.path.exists(two["checkpoint"])
    import numpy as np

    for a, b in zip(one["weights"], two["weights"]):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-4, atol=1e-5)


def test_a_peer_error_of_either_backend_is_a_lost_worker_and_others_are_not(monkeypatch):
    """What the trainer turns into WorkerLost: a TensorFlow transport error on TensorFlow, a
    gloo / UNAVAILABLE JaxRuntimeError on JAX; an out-of-memory error stays itself."""
    import keras
    import tensorflow as tf

    from mrcnn_kp.training import distribute

    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    lost = distribute.lost_worker_error(tf.errors.UnavailableError(None, None, "peer gone"))
    assert isinstance(lost, distribute.WorkerLost) and "--resume last" in str(lost)
    assert distribute.lost_worker_error(ValueError("a bad shape")) is None
    jax_errors = pytest.importorskip("jax.errors")
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    gloo = jax_errors.JaxRuntimeError("UNKNOWN: Gloo all-reduce failed: [pair.cc:547] "
                                      "Connection closed by peer [127.0.0.1]:36761")
    assert "Connection closed by peer" in str(distribute.lost_worker_error(gloo))
    unavailable = jax_errors.JaxRuntimeError("UNAVAILABLE: task 1 heartbeat timeout")
    assert isinstance(distribute.lost_worker_error(unavailable), distribute.WorkerLost)
    memory = jax_errors.JaxRuntimeError("RESOURCE_EXHAUSTED: out of memory")
    assert distribute.lost_worker_error(memory) is None
    assert distribute.lost_worker_error(tf.errors.UnavailableError(None, None, "x")) is None


def test_a_worker_keeps_its_checkpoints_only_where_it_is_told():
    from mrcnn_kp.training import distribute

    assert distribute.worker_checkpoint_dir({}) is None
    assert distribute.worker_checkpoint_dir({"MRCNN_KP_WORKER_CHECKPOINT_DIR": ""}) is None
    assert distribute.worker_checkpoint_dir(
        {"MRCNN_KP_WORKER_CHECKPOINT_DIR": "/shared/w1"}) == "/shared/w1"
