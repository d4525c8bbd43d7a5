"""mrcnn_kp.run_directory: run folder and checkpoint names, and finding the newest checkpoint."""
import datetime
import os

import pytest

from mrcnn_kp import run_directory


def touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("x")


def test_names_follow_matterport():
    assert run_directory.run_dir_name("Person", datetime.datetime(2024, 3, 5, 7, 9)) == \
        "person20240305T0709"
    assert run_directory.checkpoint_name("Person", 3) == "mask_rcnn_person_0003.weights.h5"
    assert run_directory.checkpoint_name("tiny", 12, interrupted=True) == \
        "mask_rcnn_tiny_0012_interrupted.weights.h5"
    assert run_directory.checkpoint_pattern("tiny").format(epoch=7) == \
        "mask_rcnn_tiny_0007.weights.h5"


@pytest.mark.parametrize("name, expected", [
    ("logs/tiny20240101T1200/mask_rcnn_tiny_0007.weights.h5", 7),
    ("logs/tiny20240101T1200/mask_rcnn_tiny_0012_interrupted.weights.h5", 12),
    ("logs/coco20180101T0000/mask_rcnn_coco_0160.h5", 160),  # a matterport run
    ("pretrained/mask_rcnn_coco.h5", None),
    ("logs/tiny20240101T1200/something_0003.weights.h5", None),
])
def test_parse_checkpoint_path_gives_run_dir_and_epoch(name, expected):
    parsed = run_directory.parse_checkpoint_path(name)
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
    assert run_directory.find_last(tmp_path, "TINY") == \
        str(old / "mask_rcnn_tiny_0010.weights.h5")
    touch(str(new / "mask_rcnn_tiny_0001.weights.h5"))
    touch(str(new / "mask_rcnn_tiny_0001_interrupted.weights.h5"))
    assert run_directory.find_last(tmp_path, "tiny") == \
        str(new / "mask_rcnn_tiny_0001_interrupted.weights.h5")


def test_find_last_without_a_name_takes_the_newest_run_of_any_name(tmp_path):
    touch(str(tmp_path / "tiny20240101T1200" / "mask_rcnn_tiny_0002.weights.h5"))
    touch(str(tmp_path / "demo20250101T1200" / "mask_rcnn_demo_0001.weights.h5"))
    touch(str(tmp_path / "coco20260101T1200" / "config.json"))  # no checkpoint yet
    (tmp_path / "notes").mkdir()
    newest = str(tmp_path / "demo20250101T1200" / "mask_rcnn_demo_0001.weights.h5")
    assert run_directory.find_last(tmp_path) == newest
    # a name without runs (or without checkpoints) falls back to any name ...
    assert run_directory.find_last(tmp_path, "coco") == newest
    # ... unless any_name=False
    with pytest.raises(FileNotFoundError, match="no checkpoint .* of 'coco'"):
        run_directory.find_last(tmp_path, "coco", any_name=False)
    assert [name for _, name, _ in run_directory.runs(tmp_path)] == ["coco", "demo", "tiny"]


def test_find_last_says_what_it_searched(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run directory of 'tiny'"):
        run_directory.find_last(tmp_path, "tiny", any_name=False)
    (tmp_path / "tiny20240101T1200").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no checkpoint \(mask_rcnn_\*.weights.h5\)"):
        run_directory.find_last(tmp_path, "tiny", any_name=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint in a run directory of 'tiny' or "
                                                "of any name under "):
        run_directory.find_last(tmp_path, "tiny")
    with pytest.raises(FileNotFoundError, match="of any name under "):
        run_directory.find_last(tmp_path / "missing")
