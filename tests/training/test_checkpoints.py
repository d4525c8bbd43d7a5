import datetime
import errno
import os

import numpy as np
import pytest

from mrcnn_kp.config import TinyConfig
from mrcnn_kp import run_directory
from mrcnn_kp.training import checkpoints


def touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("x")


def test_run_dir_and_checkpoint_names_follow_matterport():
    config = TinyConfig(NAME="Person")
    assert checkpoints.run_dir_name(config, datetime.datetime(2024, 3, 5, 7, 9)) == \
        "person20240305T0709"
    assert checkpoints.checkpoint_path("logs/person20240305T0709", config, 3) == \
        os.path.join("logs/person20240305T0709", "mask_rcnn_person_0003.weights.h5")
    assert checkpoints.state_path("a/mask_rcnn_person_0003.weights.h5") == \
        "a/mask_rcnn_person_0003.state.npz"


def test_state_round_trip(tmp_path):
    path = str(tmp_path / "mask_rcnn_tiny_0002.state.npz")
    arrays = {"sgd/iteration": np.array(14, np.int64),
              "sgd/conv1_kernel_momentum": np.arange(6, dtype=np.float32).reshape(2, 3)}
    checkpoints.save_state(path, {"epoch": 2, "iterations": 14, "layers": "4+"}, arrays)
    meta, loaded = checkpoints.load_state(path)
    assert meta == {"epoch": 2, "iterations": 14, "layers": "4+"}
    assert sorted(loaded) == sorted(arrays)
    np.testing.assert_array_equal(loaded["sgd/conv1_kernel_momentum"],
                                  arrays["sgd/conv1_kernel_momentum"])


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = str(tmp_path / "mask_rcnn_tiny_0002.state.npz")
    checkpoints.save_state(path, {"epoch": 1}, {"a": np.zeros(3)})
    before = open(path, "rb").read()

    def crash(f, **payload):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoints.save_state(path, {"epoch": 2}, {"a": np.ones(3)})
    assert open(path, "rb").read() == before
    assert checkpoints.load_state(path)[0] == {"epoch": 1}
    assert os.listdir(tmp_path) == ["mask_rcnn_tiny_0002.state.npz"]


# ---------------------------------------------------------------------------- a refusing disk
def _standin_trainer(model_dir):
    from mrcnn_kp.training.trainer import Trainer
    from standin_models import build_standin_training_model, standin_config

    config = standin_config()
    return Trainer(build_standin_training_model(config), config, model_dir=str(model_dir))


def _values(model):
    import keras

    return [keras.ops.convert_to_numpy(w).copy() for w in model.weights]


def _run_files(run_dir):
    return sorted(f for f in os.listdir(run_dir) if os.path.isfile(os.path.join(run_dir, f)))


def _full_disk(self, filepath, *args, **kwargs):
    """keras.Model.save_weights on a full disk: part of the file, then ENOSPC."""
    with open(filepath, "wb") as f:
        f.write(b"\x89HDF\r\n\x1a\n" + b"\0" * 4096)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filepath)


def _read_only(*args, **kwargs):
    """tempfile.mkstemp in a read-only directory. Tests run as root here, and root writes
    through chmod 0555, so the refusal is injected where the package creates its files."""
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))


@pytest.mark.parametrize("fault", ["full disk", "read-only"])
def test_a_refused_checkpoint_write_stops_training_and_keeps_the_previous_one(
        tmp_path, monkeypatch, fault):
    import keras

    from mrcnn_kp import utils
    from standin_models import StandinBatches

    trainer = _standin_trainer(tmp_path)
    trainer.train(StandinBatches(), None, 0.05, 1, "all", verbose=0)
    first = trainer.last_checkpoint
    after_epoch_1 = _values(trainer.model)
    files_before = _run_files(trainer.log_dir)
    bytes_before = {f: open(os.path.join(trainer.log_dir, f), "rb").read() for f in files_before}
    if fault == "full disk":
        monkeypatch.setattr(keras.Model, "save_weights", _full_disk)
        message = r"cannot write .*mask_rcnn_standin_0002.weights.h5: No space left on device"
    else:
        monkeypatch.setattr(utils.tempfile, "mkstemp", _read_only)
        message = r"cannot write .*mask_rcnn_standin_0002.weights.h5: Read-only file system"
    with pytest.raises(checkpoints.CheckpointWriteError, match=message) as caught:
        trainer.train(StandinBatches(), None, 0.05, 3, "all", verbose=0)
    assert caught.value.errno == (errno.ENOSPC if fault == "full disk" else errno.EROFS)
    monkeypatch.undo()
    # nothing lost, nothing half-written left behind: not the weights, not their state
    assert _run_files(trainer.log_dir) == files_before
    for name, content in bytes_before.items():
        assert open(os.path.join(trainer.log_dir, name), "rb").read() == content, name
    assert run_directory.find_last(tmp_path, "standin") == first
    resumed = _standin_trainer(tmp_path)
    resumed.load_checkpoint(first)
    assert resumed.epoch == 1
    for expected, got in zip(after_epoch_1, _values(resumed.model)):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into a chmod 0555 directory anyway")
def test_a_read_only_run_directory_by_chmod(tmp_path):
    from standin_models import StandinBatches

    trainer = _standin_trainer(tmp_path)
    trainer.train(StandinBatches(), None, 0.05, 1, "all", verbose=0)
    os.chmod(trainer.log_dir, 0o555)
    try:
        with pytest.raises(checkpoints.CheckpointWriteError, match="Permission denied"):
            trainer.train(StandinBatches(), None, 0.05, 2, "all", verbose=0)
    finally:
        os.chmod(trainer.log_dir, 0o755)
    assert run_directory.find_last(tmp_path, "standin") == trainer.last_checkpoint
