"""Multi-worker data parallel with real worker processes on localhost: free ports, one CPU
thread each. TensorFlow: MultiWorkerMirroredStrategy from TF_CONFIG; JAX: jax.distributed (gloo
collectives on CPU) + keras.distribution.DataParallel. Both backends throughout.

The stand-in model, 3 steps an epoch, through Trainer (multiworker_run.py):
- 2 workers x 1 image give the losses and weights of 1 worker x 2 images (tolerance 1e-5
  absolute on weights, 1e-5 relative on losses: float32 all-reduce order), identical weights on
  both workers, checkpoints and config from the chief only;
- a killed worker stops the other with WorkerLost within KILL_TIMEOUT_S (collective timeout,
  on JAX the heartbeat timeout, COLLECTIVE_TIMEOUT_S), and restarting both resumes from the
  chief's last checkpoint.

The real tiny model through `mrcnn-kp train --synthetic` (slow): identical weights on both
workers, only the chief writes, finite and falling losses, and what 2 workers x 1 image share
with 1 worker x 2 images on each backend (see that test).
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from mrcnn_kp.config import LOSS_NAMES
from mrcnn_kp.utils import free_localhost_ports


HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "multiworker_run.py")
COLLECTIVE_TIMEOUT_S = 20
KILL_TIMEOUT_S = 120  # the surviving worker must have exited by then
# 2 JAX processes against 1 on the real model, float32 reduction order (measured: 1.5e-6
# relative on the losses, 6e-8 on the weights after 3 steps)
JAX_LOSS_RTOL = 1e-5
JAX_WEIGHT_ATOL = 1e-6


def worker_env(backend, num_workers, index, ports):
    """A worker's environment: one CPU thread, no GPU, the collective timeout, and the cluster
    (TensorFlow: TF_CONFIG; JAX: the JAX_* variables) when there are several workers."""
    env = dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="",
               TF_CPP_MIN_LOG_LEVEL="2", MRCNN_KP_COLLECTIVE_TIMEOUT=str(COLLECTIVE_TIMEOUT_S),
               MRCNN_KP_TF_THREADS="1,1", XLA_FLAGS="--xla_cpu_multi_thread_eigen=false",
               PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for name in ("TF_CONFIG", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                 "MRCNN_KP_WORKER_CHECKPOINT_DIR"):
        env.pop(name, None)
    if num_workers > 1 and backend == "jax":
        env.update(JAX_COORDINATOR_ADDRESS=f"localhost:{ports[0]}",
                   JAX_NUM_PROCESSES=str(num_workers), JAX_PROCESS_ID=str(index))
    elif num_workers > 1:
        env["TF_CONFIG"] = json.dumps({
            "cluster": {"worker": [f"localhost:{p}" for p in ports]},
            "task": {"type": "worker", "index": index}})
    return env


def start_job(num_workers, model_dir, epochs, *extra, kill=None, backend="tensorflow"):
    """Popen per worker; kill: (worker index, "EPOCH:STEP") to SIGKILL that one there."""
    ports = free_localhost_ports(num_workers)
    procs = []
    for index in range(num_workers):
        env = worker_env(backend, num_workers, index, ports)
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


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_a_killed_worker_stops_the_job_and_a_restart_resumes(tmp_path, backend):
    """TensorFlow: the survivor's collective fails (the transport, the coordination service's
    heartbeats, or the collective timeout). JAX: the survivor's gloo all-reduce fails at once
    ("Connection closed by peer") and jax_cluster.exit_now skips the shutdown barrier that
    would wait for the lost process until the heartbeat timeout."""
    started = time.monotonic()
    procs = start_job(2, tmp_path, 3, kill=(1, "2:2"), backend=backend)
    (chief_rc, chief_out), (killed_rc, _) = finish(procs, timeout=KILL_TIMEOUT_S)
    assert time.monotonic() - started < KILL_TIMEOUT_S
    assert killed_rc == -9
    assert chief_rc == 3, chief_out[-3000:]
    assert "WORKER_LOST a worker of the cluster stopped answering" in chief_out
    assert "--resume last" in chief_out
    outputs = finish(start_job(2, tmp_path, 3, "--resume", backend=backend))
    for rc, out in outputs:
        assert rc == 0, out[-3000:]
    chief, other = results(tmp_path, 2)
    assert chief["resumed_epoch"] == other["resumed_epoch"] == 1  # the chief's epoch-1 file
    assert chief["epoch"] == 3 and chief["iterations"] == other["iterations"] == 9
    for b, c in zip(chief["weights"], other["weights"]):
        np.testing.assert_array_equal(np.array(c), np.array(b))


# ---------------------------------------------------------------- the real model, the command
# `mrcnn-kp train --synthetic --config tiny` at the smallest canvas the preset allows (64 px),
# one step an epoch for 3 epochs (a checkpoint after each), seeded; worker k has its own
# --model-dir (as on machines without shared storage) and keeps its checkpoint copies
# (MRCNN_KP_WORKER_CHECKPOINT_DIR) in kept<k>/.
COMMAND_EPOCHS = 3
COMMAND_ARGS = ("train", "--synthetic", "--config", "tiny", "--set", "IMAGE_MIN_DIM=64",
                "IMAGE_MAX_DIM=64", "--steps-per-epoch", "1", "--epochs-heads", "0",
                "--epochs-4plus", "0", "--epochs-all", str(COMMAND_EPOCHS), "--seed", "7",
                "--learning-rate", "0.02")
COMMAND_TIMEOUT_S = 600


def start_train_command(backend, num_workers, images_per_gpu, root, cache):
    ports = free_localhost_ports(num_workers)
    procs = []
    for index in range(num_workers):
        env = worker_env(backend, num_workers, index, ports)
        env.update(MRCNN_KP_CACHE=str(cache),
                   MRCNN_KP_WORKER_CHECKPOINT_DIR=str(root / f"kept{index}"))
        args = [sys.executable, "-m", "mrcnn_kp.cli", *COMMAND_ARGS, "--images-per-gpu",
                str(images_per_gpu), "--model-dir", str(root / f"logs{index}")]
        if num_workers > 1 and backend == "jax":  # the command's own options, not JAX_*
            for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
                env.pop(name)
            args += ["--coordinator", f"localhost:{ports[0]}", "--num-processes",
                     str(num_workers), "--process-id", str(index)]
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    return procs


def epoch_scalars(run_dir, split):
    """{loss name: [value per epoch]} from the run's TensorBoard files (full float32)."""
    import tensorflow as tf

    found = {}
    for name in sorted(os.listdir(os.path.join(run_dir, split))):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(run_dir, split, name)):
            for value in event.summary.value:
                found.setdefault(value.tag.removeprefix("epoch_"), {})[event.step] = \
                    float(tf.make_ndarray(value.tensor))
    return {tag: [steps[s] for s in sorted(steps)] for tag, steps in found.items()}


def h5_arrays(path):
    import h5py

    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()])
                     if isinstance(item, h5py.Dataset) else None)
    return arrays


def state_arrays(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files if k != "meta"}


def checkpoint_names(epochs):
    return [f"mask_rcnn_tiny_{e:04d}{suffix}" for e in range(1, epochs + 1)
            for suffix in (".state.npz", ".weights.h5")]


@pytest.fixture(scope="module")
def synthetic_cache(tmp_path_factory):
    """MRCNN_KP_CACHE for the workers, holding the 64 px synthetic set (written once here, not
    by several workers at the same time)."""
    from mrcnn_kp.data.synthetic import generate_synthetic_coco

    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MRCNN_KP_CACHE", str(cache))
        for split in ("train", "val"):
            generate_synthetic_coco(image_size=64, split=split)
    return cache


@pytest.fixture(scope="module", params=["tensorflow", "jax"])
def train_command_runs(tmp_path_factory, request, synthetic_cache):
    """1 worker x 2 images and 2 workers x 1 image, run side by side through the command."""
    cache = synthetic_cache
    single, pair = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    started = time.monotonic()
    procs = (start_train_command(request.param, 1, 2, single, cache)
             + start_train_command(request.param, 2, 1, pair, cache))
    outputs = finish(procs, timeout=COMMAND_TIMEOUT_S)
    seconds = time.monotonic() - started
    for rc, out in outputs:
        assert rc == 0, out[-3000:]
        assert f"trained {COMMAND_EPOCHS} epochs" in out, out[-3000:]
    print(f"{request.param}: 1 and 2 workers side by side in {seconds:.0f} s")
    return request.param, single, pair, cache


def run_dir(root, index=0):
    (name,) = os.listdir(root / f"logs{index}")
    return root / f"logs{index}" / name


@pytest.mark.slow
def test_the_train_command_on_two_workers(train_command_runs):
    """Both workers finish, hold bit-identical weights and optimizer state after every epoch
    (the chief's checkpoints against the copies the other worker kept), only the chief wrote a
    run directory, and the losses are finite, the held-out batch's falling epoch by epoch."""
    _, _, pair, _ = train_command_runs
    chief_dir = run_dir(pair)
    assert not (pair / "logs1").exists()  # the other worker wrote nothing there
    names = sorted(os.listdir(chief_dir))
    assert names == sorted(["config.json", "train", "validation",
                            *checkpoint_names(COMMAND_EPOCHS)])
    assert sorted(os.listdir(pair / "kept1")) == sorted(checkpoint_names(COMMAND_EPOCHS))
    assert not (pair / "kept0").exists()  # the chief's checkpoints are the real ones
    for name in checkpoint_names(COMMAND_EPOCHS):
        read = h5_arrays if name.endswith(".h5") else state_arrays
        chief, other = read(chief_dir / name), read(pair / "kept1" / name)
        assert sorted(chief) == sorted(other) and len(chief) > 100
        for key in chief:
            np.testing.assert_array_equal(other[key], chief[key], err_msg=f"{name}: {key}")
    train = epoch_scalars(chief_dir, "train")
    val = epoch_scalars(chief_dir, "validation")
    for losses in (train, val):
        assert {"loss", *LOSS_NAMES} <= set(losses)
        assert all(len(v) == COMMAND_EPOCHS and np.isfinite(v).all() for v in losses.values())
    # the same validation batch every epoch: it measures the training, not the batch
    assert val["loss"][0] > val["loss"][1] > val["loss"][2], val["loss"]


@pytest.mark.slow
def test_two_workers_with_half_the_batch_against_one_with_all_of_it(train_command_runs):
    """What 2 workers x 1 image share with 1 worker x 2 images.

    The data on both backends: the two shards of an epoch are disjoint, cover every image, and
    interleave into the single worker's global batches (images and augmentations by slot).

    JAX: everything, within float32 rounding. DataParallel runs one program over the global
    batch of all processes, so each loss is the mean over the global batch and the ROI
    sampler's random draw has the global batch's shape, as with one worker.

    TensorFlow: only what does not depend on how the batch is split. Each replica of
    MultiWorkerMirroredStrategy runs the model on its own images: every loss is a mean over
    that replica's anchors, ROIs or joints, and the step averages the replicas' means (the
    mean over the global batch only where every image counts the same: the RPN's class loss,
    RPN_TRAIN_ANCHORS_PER_IMAGE anchors each), and every replica draws the ROI sample of its
    one image from the same generator state, so image 2 gets image 1's random numbers rather
    than its own. From the first step on, then, the losses and weights differ from one
    worker's by more than rounding (by design, not noise): what is equal is the first step's
    rpn_class_loss, computed from the same initial weights on the same images and anchors.
    """
    import argparse

    from mrcnn_kp.commands import train as train_command
    from mrcnn_kp.data.pipeline import DataGenerator

    backend, single, pair, cache = train_command_runs
    one, two = run_dir(single), run_dir(pair)
    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    args = parser.parse_args([*COMMAND_ARGS[1:], "--images-per-gpu", "1"])
    config = train_command.build_config(args)  # each worker's: the run's config
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MRCNN_KP_CACHE", str(cache))
        dataset, _ = train_command.load_datasets(args, config)
    shards = [DataGenerator(dataset, config, seed=7, num_shards=2, shard_index=k).image_order(0)
              for k in (0, 1)]
    whole = DataGenerator(dataset, config.copy(IMAGES_PER_GPU=2), seed=7).image_order(0)
    assert not set(shards[0]) & set(shards[1])
    assert sorted(np.concatenate(shards)) == list(range(dataset.num_images))
    np.testing.assert_array_equal(np.stack(shards, axis=1).ravel(), whole)

    losses = {split: (epoch_scalars(one, split), epoch_scalars(two, split))
              for split in ("train", "validation")}
    if backend == "tensorflow":
        alone, together = losses["train"]
        np.testing.assert_allclose(together["rpn_class_loss"][0], alone["rpn_class_loss"][0],
                                   rtol=1e-5)
        return
    for alone, together in losses.values():
        for name in ("loss", *LOSS_NAMES):
            np.testing.assert_allclose(together[name], alone[name], rtol=JAX_LOSS_RTOL,
                                       err_msg=name)
    name = checkpoint_names(COMMAND_EPOCHS)[-1]
    alone, together = h5_arrays(one / name), h5_arrays(two / name)
    for key in alone:
        np.testing.assert_allclose(together[key], alone[key], atol=JAX_WEIGHT_ATOL, err_msg=key)
