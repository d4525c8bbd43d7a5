"""Multi-worker data parallel with real worker processes on localhost: free ports, one CPU
thread each, the stand-in model, 3 steps an epoch. TensorFlow: MultiWorkerMirroredStrategy from
TF_CONFIG; JAX: jax.distributed (gloo collectives on CPU) + keras.distribution.DataParallel.

- 2 workers x 1 image give the losses and weights of 1 worker x 2 images (tolerance 1e-5
  absolute on weights, 1e-5 relative on losses: float32 all-reduce order), identical weights on
  both workers, checkpoints and config from the chief only;
  (both backends);
- a killed worker stops the other with WorkerLost within KILL_TIMEOUT_S (collective timeout
  COLLECTIVE_TIMEOUT_S), and restarting both resumes from the chief's last checkpoint.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from mrcnn_kp.utils import free_localhost_ports


HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "multiworker_run.py")
COLLECTIVE_TIMEOUT_S = 20
KILL_TIMEOUT_S = 120  # the surviving worker must have exited by then


def start_job(num_workers, model_dir, epochs, *extra, kill=None, backend="tensorflow"):
    """Popen per worker; kill: (worker index, "EPOCH:STEP") to SIGKILL that one there."""
    ports = free_localhost_ports(num_workers)
    procs = []
    for index in range(num_workers):
        env = dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="",
                   TF_CPP_MIN_LOG_LEVEL="2", MRCNN_KP_COLLECTIVE_TIMEOUT=str(COLLECTIVE_TIMEOUT_S),
                   XLA_FLAGS="--xla_cpu_multi_thread_eigen=false",
                   PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
        for name in ("TF_CONFIG", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
                     "JAX_PROCESS_ID"):
            env.pop(name, None)
        if num_workers > 1 and backend == "jax":
            env.update(JAX_COORDINATOR_ADDRESS=f"localhost:{ports[0]}",
                       JAX_NUM_PROCESSES=str(num_workers), JAX_PROCESS_ID=str(index))
        elif num_workers > 1:
            env["TF_CONFIG"] = json.dumps({
                "cluster": {"worker": [f"localhost:{p}" for p in ports]},
                "task": {"type": "worker", "index": index}})
        args = [sys.executable, WORKER, str(model_dir), str(model_dir / f"worker{index}.json"),
                str(epochs), "2", *extra]
        if kill is not None and kill[0] == index:
            args += ["--kill-at", kill[1]]
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    return procs


def finish(procs, timeout=300):
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=timeout)
        outputs.append((proc.returncode, out))
    return outputs


def results(model_dir, count):
    out = []
    for index in range(count):
        with open(model_dir / f"worker{index}.json") as f:
            out.append(json.load(f))
    return out


@pytest.fixture(scope="module", params=["tensorflow", "jax"])
def one_and_two_workers(tmp_path_factory, request):
    single, pair = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    outputs = finish(start_job(1, single, 2, backend=request.param)
                     + start_job(2, pair, 2, backend=request.param))
    for rc, out in outputs:
        assert rc == 0, out[-3000:]
    return results(single, 1)[0], results(pair, 2), pair


def test_two_workers_with_half_the_batch_train_like_one_with_all_of_it(one_and_two_workers):
    one, (chief, other), _ = one_and_two_workers
    assert (one["num_workers"], chief["num_workers"], chief["index"], other["index"]) == \
        (1, 2, 0, 1)
    assert (chief["replicas"], chief["chief"], other["chief"]) == (2, True, False)
    assert one["iterations"] == chief["iterations"] == other["iterations"] == 6
    np.testing.assert_allclose(chief["loss"], one["loss"], rtol=1e-5)
    assert chief["loss"][1] < chief["loss"][0]
    for a, b, c in zip(one["weights"], chief["weights"], other["weights"]):
        np.testing.assert_allclose(np.array(b), np.array(a), atol=1e-5)
        np.testing.assert_array_equal(np.array(c), np.array(b))  # the same on both workers


def test_only_the_chief_writes_the_run_directory(one_and_two_workers):
    _, _, model_dir = one_and_two_workers
    runs = [d for d in os.listdir(model_dir) if os.path.isdir(model_dir / d)]
    assert len(runs) == 1
    names = sorted(os.listdir(model_dir / runs[0]))
    assert "config.json" in names and "train" in names  # TensorBoard
    assert [n for n in names if n.endswith(".weights.h5")] == [
        "mask_rcnn_standin_0001.weights.h5", "mask_rcnn_standin_0002.weights.h5"]


@pytest.mark.tf_only
def test_a_killed_worker_stops_the_job_and_a_restart_resumes(tmp_path):
    started = time.monotonic()
    procs = start_job(2, tmp_path, 3, kill=(1, "2:2"))
    (chief_rc, chief_out), (killed_rc, _) = finish(procs, timeout=KILL_TIMEOUT_S)
    assert time.monotonic() - started < KILL_TIMEOUT_S
    assert killed_rc == -9
    assert chief_rc == 3, chief_out[-3000:]
    assert "WORKER_LOST a worker of the cluster stopped answering" in chief_out
    assert "--resume last" in chief_out
    outputs = finish(start_job(2, tmp_path, 3, "--resume"))
    for rc, out in outputs:
        assert rc == 0, out[-3000:]
    chief, other = results(tmp_path, 2)
    assert chief["resumed_epoch"] == other["resumed_epoch"] == 1  # the chief's epoch-1 file
    assert chief["epoch"] == 3 and chief["iterations"] == other["iterations"] == 9
    for b, c in zip(chief["weights"], other["weights"]):
        np.testing.assert_array_equal(np.array(c), np.array(b))
