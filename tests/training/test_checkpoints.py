import datetime
import os

import numpy as np
import pytest

from mrcnn_kp.config import TinyConfig
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


@pytest.mark.parametrize("name, expected", [
    ("logs/tiny20240101T1200/mask_rcnn_tiny_0007.weights.h5", 7),
    ("logs/tiny20240101T1200/mask_rcnn_tiny_0012_interrupted.weights.h5", 12),
    ("logs/coco20180101T0000/mask_rcnn_coco_0160.h5", 160),  # a matterport run
    ("pretrained/mask_rcnn_coco.h5", None),
    ("logs/tiny20240101T1200/something_0003.weights.h5", None),
])
def test_parse_checkpoint_path_gives_run_dir_and_epoch(name, expected):
    parsed = checkpoints.parse_checkpoint_path(name)
    if expected is None:
        assert parsed is None
    else:
        assert parsed == (os.path.abspath(os.path.dirname(name)), expected)


def test_find_last_takes_the_newest_run_that_has_a_checkpoint(tmp_path):
    old = tmp_path / "tiny20240101T1200"
    new = tmp_path / "tiny20240102T0800"
    for epoch in (1, 2, 10):
        touch(str(old / f"mask_rcnn_tiny_{epoch:04d}.weights.h5"))
    touch(str(new / "config.json"))  # killed before its first epoch ended
    touch(str(tmp_path / "other20250101T0000" / "mask_rcnn_other_0001.weights.h5"))
    assert checkpoints.find_last(tmp_path, "TINY") == \
        str(old / "mask_rcnn_tiny_0010.weights.h5")
    touch(str(new / "mask_rcnn_tiny_0001.weights.h5"))
    touch(str(new / "mask_rcnn_tiny_0001_interrupted.weights.h5"))
    assert checkpoints.find_last(tmp_path, "tiny") == \
        str(new / "mask_rcnn_tiny_0001_interrupted.weights.h5")


def test_find_last_says_what_it_searched(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run directory of 'tiny'"):
        checkpoints.find_last(tmp_path, "tiny")
    (tmp_path / "tiny20240101T1200").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no checkpoint \(mask_rcnn_\*.weights.h5\)"):
        checkpoints.find_last(tmp_path, "tiny")


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
