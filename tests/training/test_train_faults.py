"""`mrcnn-kp train` killed with SIGKILL, (a) inside an epoch and (b) while a checkpoint is being
written, then resumed with `--resume last`: the weights and optimizer state after the last epoch
are bitwise those of an uninterrupted run with the same --seed.

Each run is a subprocess (tests/training/fault_driver.py injects the kill). The model is the
tiny config at 64 px, one image per step, 2 steps per epoch, 3 epochs, no validation.
"""
import os
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

from mrcnn_kp import run_directory
from mrcnn_kp.training import checkpoints

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DRIVER = os.path.join(HERE, "fault_driver.py")
# TensorFlow's C++ start-up lines (as in tests/test_cli.py)
TF_LINE = re.compile(r"^[IW]\d{4} \d\d:\d\d:\d\d|absl::InitializeLog|oneDNN custom operations|"
                     r"cpu_feature_guard|XLA service|StreamExecutor")


@pytest.fixture(scope="module")
def synthetic_coco(tmp_path_factory):
    from mrcnn_kp.data.synthetic import generate_synthetic_coco

    return generate_synthetic_coco(tmp_path_factory.mktemp("data"), num_images=4, image_size=64)


def command(synthetic_coco, model_dir, seed=5):
    json_path, images = synthetic_coco
    return ["train", "--dataset", str(json_path), "--images", str(images), "--val-fraction", "0",
            "--config", "tiny", "--set", "IMAGE_MAX_DIM=64", "IMAGE_MIN_DIM=64",
            "--images-per-gpu", "1", "--steps-per-epoch", "2", "--epochs-heads", "3",
            "--epochs-4plus", "0", "--epochs-all", "0", "--seed", str(seed),
            "--model-dir", str(model_dir)]


def driver(fault, argv, wait=True):
    # as a user runs it: no TF_CPP_MIN_LOG_LEVEL of the test suite's (the command sets its own)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")
    process = subprocess.Popen([sys.executable, DRIVER, *fault, *argv], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if not wait:
        return process
    out, _ = process.communicate(timeout=600)
    return process.returncode, out


def h5_arrays(path):
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return arrays


def assert_bitwise_equal(path_a, path_b):
    a, b = h5_arrays(path_a), h5_arrays(path_b)
    assert sorted(a) == sorted(b) and len(a) > 100
    differ = [name for name in a if not np.array_equal(a[name], b[name])]
    assert not differ, f"{len(differ)} of {len(a)} arrays differ, e.g. {differ[:3]}"


def run_files(model_dir):
    (run,) = [d for d in os.listdir(model_dir) if d.startswith("tiny")]
    return os.path.join(model_dir, run), sorted(os.listdir(os.path.join(model_dir, run)))


@pytest.mark.slow
@pytest.mark.tf_only  # bitwise reproducibility is claimed for TensorFlow (docs/RELIABILITY.md)
def test_killed_inside_an_epoch_and_while_writing_resume_to_the_uninterrupted_weights(
        tmp_path, synthetic_coco, keras_backend):
    if keras_backend != "tensorflow":
        pytest.skip("bitwise reproducibility is claimed for TensorFlow only")
    reference = driver(["none"], command(synthetic_coco, tmp_path / "straight"), wait=False)
    faulted = command(synthetic_coco, tmp_path / "faulted")

    # (a) SIGKILL after step 1 of epoch 2 (the 3rd step of the process)
    status, out = driver(["kill-at-step", "3"], faulted)
    assert status == -9 and "SIGKILL after step 1 of epoch 2" in out, out[-3000:]
    run_dir, files = run_files(tmp_path / "faulted")
    assert [f for f in files if f.startswith("mask_rcnn")] == [
        "mask_rcnn_tiny_0001.state.npz", "mask_rcnn_tiny_0001.weights.h5"]

    # (b) resumed, SIGKILL halfway through writing epoch 2's weights
    status, out = driver(["kill-in-write", "1"], faulted + ["--resume", "last"])
    assert status == -9 and "SIGKILL while writing" in out, out[-3000:]
    assert "after epoch 1" in out
    run_dir, files = run_files(tmp_path / "faulted")
    assert any(f.startswith(".tmp-") and f.endswith("mask_rcnn_tiny_0002.weights.h5")
               for f in files), files  # the half-written file never got its name
    assert "mask_rcnn_tiny_0002.weights.h5" not in files
    last = run_directory.find_last(tmp_path / "faulted", "tiny")
    assert last.endswith("mask_rcnn_tiny_0001.weights.h5")
    assert checkpoints.load_state(checkpoints.state_path(last))[0]["epoch"] == 1
    assert len(h5_arrays(last)) > 100  # intact and readable

    # resumed again: runs epochs 2 and 3 to the end
    status, out = driver(["none"], faulted + ["--resume", "last"])
    assert status == 0 and "after epoch 1" in out and "trained 3 epochs" in out, out[-3000:]
    assert "removed 1 unfinished checkpoint file(s)" in out
    assert not [f for f in run_files(tmp_path / "faulted")[1] if f.startswith(".tmp-")]
    out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0 and "trained 3 epochs" in out, out[-3000:]
    # quiet by default: our log lines, none of TensorFlow's C++ start-up lines
    assert "INFO mrcnn_kp.training: seed 5, deterministic TensorFlow ops" in out
    assert not [line for line in out.splitlines() if TF_LINE.search(line)], out[:3000]

    straight_dir, _ = run_files(tmp_path / "straight")
    for epoch in (1, 2, 3):  # epoch 1 from run (a), 2 and 3 from the last run
        name = f"mask_rcnn_tiny_{epoch:04d}.weights.h5"
        assert_bitwise_equal(os.path.join(straight_dir, name), os.path.join(run_dir, name))
    meta_s, state_s = checkpoints.load_state(os.path.join(straight_dir,
                                                          "mask_rcnn_tiny_0003.state.npz"))
    meta_f, state_f = checkpoints.load_state(os.path.join(run_dir, "mask_rcnn_tiny_0003.state.npz"))
    assert meta_s["iterations"] == meta_f["iterations"] == 6
    assert meta_s["seed_generators"] == meta_f["seed_generators"]
    assert sorted(state_s) == sorted(state_f)
    for key in state_s:  # momenta, iteration count, the guard's counters
        np.testing.assert_array_equal(state_f[key], state_s[key], err_msg=key)
