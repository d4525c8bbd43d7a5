"""Config: the defaults, derived values, overrides, JSON round trips, copy and display."""
import io
import json

import pytest

from mrcnn_kp.config import Config, ConfigError, CpuDemoConfig, TinyConfig


def test_defaults_match_matterport():
    c = Config()
    assert c.NUM_CLASSES == 2
    assert c.NUM_KEYPOINTS == 17
    assert c.KEYPOINT_MASK_SHAPE == 56
    assert c.RPN_ANCHOR_SCALES == (32, 64, 128, 256, 512)
    assert c.BBOX_STD_DEV == (0.1, 0.1, 0.2, 0.2)
    assert c.TRAIN_ROIS_PER_IMAGE == 200
    assert c.KEYPOINT_HEAD == "deconv4"


def test_derived_values():
    c = Config(IMAGE_MAX_DIM=512, IMAGE_MIN_DIM=512, IMAGES_PER_GPU=3, GPU_COUNT=2)
    assert c.BATCH_SIZE == 6
    assert c.IMAGE_SHAPE == (512, 512, 3)
    assert c.BACKBONE_SHAPES == ((128, 128), (64, 64), (32, 32), (16, 16), (8, 8))
    # matterport's 65472 anchors at 512 px (docs/MATTERPORT.md)
    assert c.NUM_ANCHORS == 65472
    assert c.IMAGE_META_SIZE == 14


def test_unknown_and_derived_attributes_are_refused():
    with pytest.raises(ConfigError, match="unknown config attribute 'IMAGE_SIZE'"):
        Config(IMAGE_SIZE=512)
    with pytest.raises(ConfigError, match="BATCH_SIZE is derived"):
        Config(BATCH_SIZE=4)


def test_json_round_trip(tmp_path):
    c = TinyConfig(LEARNING_RATE=0.02)
    path = tmp_path / "config.json"
    c.to_json(path)
    back = TinyConfig.from_json(path)
    assert back.to_dict() == c.to_dict()
    assert back.LEARNING_RATE == 0.02
    assert isinstance(back.RPN_ANCHOR_SCALES, tuple)
    assert json.loads(path.read_text())["BATCH_SIZE"] == c.BATCH_SIZE
    assert back.SEED is None and json.loads(path.read_text())["SEED"] is None
    seeded = TinyConfig.from_json(TinyConfig(SEED=12345).to_json())
    assert seeded.SEED == 12345 and seeded.copy(LEARNING_RATE=0.5).SEED == 12345


def test_tampered_derived_value_is_detected():
    d = Config().to_dict()
    d["NUM_ANCHORS"] = 7
    with pytest.raises(ConfigError, match="derived value NUM_ANCHORS"):
        Config.from_dict(d)


def test_user_subclass_overrides_values():
    class PersonConfig(Config):
        NAME = "person"
        IMAGES_PER_GPU = 1
        IMAGE_MAX_DIM = 640
        IMAGE_MIN_DIM = 640

    c = PersonConfig()
    assert c.NAME == "person" and c.BATCH_SIZE == 1 and c.IMAGE_SHAPE == (640, 640, 3)
    assert Config().IMAGE_SHAPE == (1024, 1024, 3)  # the base class is untouched
    c.LOSS_WEIGHTS["keypoint_loss"] = 2.0
    assert Config().LOSS_WEIGHTS["keypoint_loss"] == 1.0


def test_display_lists_every_value():
    out = io.StringIO()
    CpuDemoConfig().display(file=out)
    text = out.getvalue()
    assert "BACKBONE" in text and "efficientnet_lite0" in text and "NUM_ANCHORS" in text


def test_copy_with_overrides():
    c = TinyConfig()
    d = c.copy(IMAGES_PER_GPU=1)
    assert d.BATCH_SIZE == 1 and c.BATCH_SIZE == 2 and type(d) is TinyConfig
