"""`mrcnn-kp train` (mrcnn_kp/commands/train.py): the stage plan and one real run."""
import argparse
import os

import pytest

from mrcnn_kp import cli
from mrcnn_kp.commands import train as train_command


def parse(*argv):
    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_stage_epochs_add_up_like_matterports_coco_sample():
    args = parse("--epochs-heads", "40", "--epochs-4plus", "80", "--epochs-all", "40")
    assert train_command.stage_plan(args, 0.01) == [("heads", 40, 0.01), ("4+", 120, 0.01),
                                                    ("all", 160, pytest.approx(0.001))]
    args = parse("--epochs-heads", "0", "--epochs-4plus", "0", "--epochs-all", "3")
    assert train_command.stage_plan(args, 0.02) == [("all", 3, pytest.approx(0.002))]


def test_a_plan_without_epochs_is_refused():
    args = parse("--epochs-heads", "0", "--epochs-4plus", "0", "--epochs-all", "0")
    with pytest.raises(SystemExit, match="every stage has 0 epochs"):
        train_command.stage_plan(args, 0.01)


def test_config_overrides_from_the_command_line():
    args = parse("--config", "tiny", "--backbone", "resnet50", "--steps-per-epoch", "7",
                 "--images-per-gpu", "1", "--name", "people")
    config = train_command.build_config(args)
    assert (config.NAME, config.BACKBONE, config.STEPS_PER_EPOCH, config.BATCH_SIZE) == \
        ("people", "resnet50", 7, 1)
    with pytest.raises(SystemExit, match="unknown --config 'huge'"):
        train_command.build_config(parse("--config", "huge"))


def test_set_overrides_values_as_json_and_config_json_files_load(tmp_path):
    args = parse("--config", "coco_cpu", "--set", "IMAGE_MIN_DIM=448", "IMAGE_MAX_DIM=448",
                 "AUGMENT_SCALE_RANGE=[0.8, 1.25]", "NAME=people448")
    config = train_command.build_config(args)
    assert (config.IMAGE_MAX_DIM, config.AUGMENT_SCALE_RANGE, config.NAME) == \
        (448, (0.8, 1.25), "people448")
    assert tuple(config.IMAGE_SHAPE) == (448, 448, 3)  # derived values follow
    assert config.KEYPOINT_ROIS_PER_IMAGE == 16  # the rest is the preset's
    path = tmp_path / "config.json"
    config.to_json(str(path))
    again = train_command.build_config(parse("--config", str(path), "--steps-per-epoch", "3"))
    assert (again.IMAGE_MAX_DIM, again.AUGMENT_SCALE_RANGE, again.STEPS_PER_EPOCH) == \
        (448, (0.8, 1.25), 3)
    with pytest.raises(SystemExit, match=r"unknown config attribute\(s\) IMAGE_SIZE"):
        train_command.build_config(parse("--set", "IMAGE_SIZE=512"))
    with pytest.raises(SystemExit, match="--set 'IMAGE_MAX_DIM': expected NAME=VALUE"):
        train_command.build_config(parse("--set", "IMAGE_MAX_DIM"))


def test_data_is_required():
    args = parse("--config", "tiny")
    with pytest.raises(SystemExit, match="give --dataset JSON and --images DIR, or --synthetic"):
        train_command.load_datasets(args, train_command.build_config(args))


@pytest.mark.slow
def test_train_command_runs_the_stages_and_resumes(tmp_path, capsys):
    from mrcnn_kp.data.synthetic import generate_synthetic_coco

    json_path, images = generate_synthetic_coco(tmp_path / "data", num_images=6,
                                                image_size=128)
    common = ["train", "--dataset", json_path, "--images", images, "--config", "tiny",
              "--steps-per-epoch", "1", "--val-fraction", "0", "--model-dir",
              str(tmp_path / "logs"), "--epochs-4plus", "0"]
    assert cli.main(common + ["--epochs-heads", "1", "--epochs-all", "0"]) == 0
    out = capsys.readouterr().out
    assert "stage heads: epochs 1..1" in out and "trained 1 epochs" in out
    # the same plan extended by one "all" epoch, resumed: heads is done, all runs epoch 2
    assert cli.main(common + ["--epochs-heads", "1", "--epochs-all", "1",
                              "--resume", "last"]) == 0
    out = capsys.readouterr().out
    assert "after epoch 1" in out and "stage heads" not in out
    assert "stage all: epochs 2..2" in out
    run_dir = [d for d in os.listdir(tmp_path / "logs") if d.startswith("tiny")]
    assert len(run_dir) == 1
    assert sorted(f for f in os.listdir(tmp_path / "logs" / run_dir[0]) if f.endswith(".h5")) \
        == ["mask_rcnn_tiny_0001.weights.h5", "mask_rcnn_tiny_0002.weights.h5"]
