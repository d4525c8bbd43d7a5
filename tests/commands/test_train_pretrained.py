"""`mrcnn-kp train --pretrained imagenet`: the config gets the Lite0 weights' normalisation, and
other backbones are refused with a clear message (the loading itself: tests/weights/test_lite0_imagenet.py)."""
import argparse

import pytest

from mrcnn_kp.commands import train


def parse(*argv):
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_pretrained_imagenet_sets_the_lite0_normalisation():
    config = train.build_config(parse("--config", "default", "--backbone", "efficientnet_lite0",
                                      "--pretrained", "imagenet"))
    assert config.BACKBONE == "efficientnet_lite0"
    assert tuple(config.MEAN_PIXEL) == (127.0, 127.0, 127.0)
    assert tuple(config.PIXEL_STD) == (128.0, 128.0, 128.0)


def test_pretrained_imagenet_refuses_resnet():
    with pytest.raises(SystemExit, match="--pretrained imagenet exists for --backbone "
                                         "efficientnet_lite0 only, not resnet50"):
        train.build_config(parse("--config", "default", "--pretrained", "imagenet"))


def test_without_pretrained_the_preset_is_unchanged():
    config = train.build_config(parse("--config", "default"))
    assert tuple(config.MEAN_PIXEL) == (123.7, 116.8, 103.9)
