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


def test_initial_weights_last_a_file_or_none(tmp_path):
    args = parse("--weights", "last", "--model-dir", str(tmp_path))
    with pytest.raises(SystemExit, match="mrcnn-kp train: error: --weights last: no run "
                                         "directory of 'tiny'"):
        train_command.resolve_weights(args, name="tiny")
    other = tmp_path / "demo20250101T1200" / "mask_rcnn_demo_0001.weights.h5"
    other.parent.mkdir()
    other.write_bytes(b"")  # another name's run is not this run's to continue
    with pytest.raises(SystemExit, match="--weights last: no run directory of 'tiny'"):
        train_command.resolve_weights(args, name="tiny")
    own = tmp_path / "tiny20240101T1200" / "mask_rcnn_tiny_0002.weights.h5"
    own.parent.mkdir()
    own.write_bytes(b"")
    assert train_command.resolve_weights(args, name="tiny") == str(own)
    with pytest.raises(SystemExit, match=r"--weights w.h5: no such file$"):
        train_command.resolve_weights(parse("--weights", "w.h5"))
    assert train_command.resolve_weights(parse("--weights", "none")) is None
    assert train_command.resolve_weights(parse("--weights", str(own))) == str(own)


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


def test_a_full_disk_stops_the_command_with_one_line_naming_the_last_checkpoint(
        tmp_path, monkeypatch, capsys):
    """The command with the stand-in model (seconds): epoch 1's checkpoint is written, epoch
    2's meets ENOSPC; exit status 1, one error line, epoch 1's checkpoint intact."""
    import errno

    import keras

    from mrcnn_kp import run_directory
    from mrcnn_kp.model import keypoint_rcnn
    from standin_models import StandinBatches, build_standin_training_model

    monkeypatch.setattr(keypoint_rcnn, "build_training_model", build_standin_training_model)
    monkeypatch.setattr(train_command, "load_datasets",
                        lambda args, config: (StandinBatches(), None))
    original, calls = keras.Model.save_weights, []

    def full_after_the_first(self, filepath, *args, **kwargs):
        calls.append(filepath)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filepath)
        return original(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save_weights", full_after_the_first)
    status = cli.main(["train", "--config", "tiny", "--steps-per-epoch", "3", "--model-dir",
                       str(tmp_path), "--epochs-heads", "3", "--epochs-4plus", "0",
                       "--epochs-all", "0"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("mrcnn-kp train: error")]
    assert status == 1 and len(errors) == 1, err
    last = run_directory.find_last(tmp_path, "tiny")
    assert last.endswith("mask_rcnn_tiny_0001.weights.h5")
    assert "mask_rcnn_tiny_0002.weights.h5: No space left on device" in errors[0]
    assert f"the last complete checkpoint is {last}" in errors[0]
    assert "--resume last" in errors[0] and "Traceback" not in err
    assert sorted(f for f in os.listdir(os.path.dirname(last)) if "mask_rcnn" in f) == \
        ["mask_rcnn_tiny_0001.state.npz", "mask_rcnn_tiny_0001.weights.h5"]


def test_a_lost_worker_stops_the_command_with_one_line_and_status_3(tmp_path, monkeypatch,
                                                                     capsys):
    """WorkerLost from a training step (the stand-in model): one error line that says to
    restart with --resume last, exit status 3, no traceback."""
    from mrcnn_kp.maskrcnn import MaskRCNN
    from mrcnn_kp.model import keypoint_rcnn
    from mrcnn_kp.training.distribute import WorkerLost
    from standin_models import StandinBatches, build_standin_training_model

    def lose_a_worker(*args, **kwargs):
        raise WorkerLost("a worker of the cluster stopped answering during a training step "
                         "(...); restart every worker with --resume last")

    monkeypatch.setattr(keypoint_rcnn, "build_training_model", build_standin_training_model)
    monkeypatch.setattr(train_command, "load_datasets",
                        lambda args, config: (StandinBatches(), None))
    monkeypatch.setattr(MaskRCNN, "train", lose_a_worker)
    status = cli.main(["train", "--config", "tiny", "--model-dir", str(tmp_path),
                       "--epochs-heads", "1", "--epochs-4plus", "0", "--epochs-all", "0"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("mrcnn-kp train: error")]
    assert status == train_command.WORKER_LOST_STATUS == 3 and len(errors) == 1, err
    assert "stopped answering" in errors[0] and "--resume last" in errors[0]
    assert "Traceback" not in err
