"""mrcnn_kp.inference.trained_model: from "last", a file, named weights or "none" to a config
and a Predictor."""
import hashlib
import os

import numpy as np
import pytest

from mrcnn_kp.config import TinyConfig
from mrcnn_kp.inference import trained_model
from mrcnn_kp.inference.trained_model import (WeightsNotFoundError, config_for_weights,
                                              open_predictor, resolve_weights)


def touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"x")
    return str(path)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A TinyConfig .weights.h5 (seeded) with its config inside."""
    import keras

    from mrcnn_kp.model.keypoint_rcnn import build_inference_model
    from mrcnn_kp.weights import save_weights

    folder = tmp_path_factory.mktemp("tiny_weights")
    keras.utils.set_random_seed(3)
    path = folder / "tiny_coco.weights.h5"
    save_weights(build_inference_model(TinyConfig()), path, config=TinyConfig())
    return path


def test_last_takes_the_newest_run_of_the_name_else_of_any_name(tmp_path):
    tiny = touch(tmp_path / "tiny20240101T1200" / "mask_rcnn_tiny_0002.weights.h5")
    demo = touch(tmp_path / "demo20250101T1200" / "mask_rcnn_demo_0001.weights.h5")
    assert resolve_weights("last", logs=tmp_path, name="tiny") == tiny
    assert resolve_weights("last", logs=tmp_path, name="TINY") == tiny
    assert resolve_weights("last", logs=tmp_path) == demo
    assert resolve_weights("last", logs=tmp_path, name="coco") == demo


def test_last_without_a_checkpoint_says_where_it_looked(tmp_path):
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights("last", logs=tmp_path / "logs", name="tiny")
    assert isinstance(info.value, FileNotFoundError)
    assert info.value.spec == "last"
    assert info.value.reason.startswith("no checkpoint in a run directory of 'tiny' or of any "
                                        f"name under {tmp_path / 'logs'}")
    assert info.value.reason.endswith("; train first, or give a weights file")


def test_a_file_none_and_bad_files(tmp_path):
    path = touch(tmp_path / "model.weights.h5")
    assert resolve_weights(path) == path
    assert resolve_weights(tmp_path / "model.weights.h5") == path
    for spec in (None, "none", "None", "random"):
        assert resolve_weights(spec) is None
    with pytest.raises(WeightsNotFoundError, match="w.h5: no such file") as info:
        resolve_weights(str(tmp_path / "w.h5"))
    assert info.value.reason == "no such file"
    notes = touch(tmp_path / "notes.txt")
    with pytest.raises(WeightsNotFoundError, match="not a weights file"):
        resolve_weights(notes)


def test_named_weights_are_fetched_from_the_mirror(tmp_path, monkeypatch, tiny_weights):
    from mrcnn_kp.weights import presets

    digest = hashlib.sha256(tiny_weights.read_bytes()).hexdigest()
    entry = presets.WeightsPreset(
        name="tiny-test", summary="TinyConfig weights for the tests",
        filename=tiny_weights.name, url="https://example.invalid/tiny.h5",
        page="https://example.invalid", sha256=digest, source_format="keras",
        make_config=TinyConfig)
    monkeypatch.setitem(presets.WEIGHTS_PRESETS, "tiny-test", entry)
    monkeypatch.setenv("MRCNN_KP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MRCNN_KP_WEIGHTS_URL", tiny_weights.parent.as_uri())
    assert trained_model.is_named("tiny-test") and not trained_model.is_named("last")
    assert "tiny-test" in trained_model.named_weights()
    path = resolve_weights("tiny-test")
    assert path.startswith(str(tmp_path / "cache")) and os.path.isfile(path)
    assert config_for_weights(path).NAME == "tiny"


def test_config_comes_from_the_file_else_from_beside_it(tmp_path, tiny_weights):
    assert config_for_weights(tiny_weights).to_dict() == TinyConfig().to_dict()
    assert config_for_weights(None) is None
    legacy = touch(tmp_path / "run" / "mask_rcnn_tiny_0001.h5")  # no config inside
    assert config_for_weights(legacy) is None
    TinyConfig(NAME="beside").to_json(str(tmp_path / "run" / "config.json"))
    assert config_for_weights(legacy).NAME == "beside"


def test_open_config_prefers_the_callers_config_and_applies_overrides(tmp_path, tiny_weights):
    config, path = trained_model.open_config(tiny_weights, DETECTION_MIN_CONFIDENCE=0.5)
    assert path == str(tiny_weights) and config.NAME == "tiny"
    assert config.DETECTION_MIN_CONFIDENCE == 0.5
    config, path = trained_model.open_config("none")
    assert path is None and config.NAME == "coco_keypoints"  # the default preset
    run = touch(tmp_path / "other20240101T1200" / "mask_rcnn_other_0001.weights.h5")
    given = TinyConfig(NAME="other")
    config, path = trained_model.open_config("last", given, logs=tmp_path)
    assert config is given and path == run


def test_open_predictor_detects_with_the_saved_weights(tiny_weights):
    predictor, config, path = open_predictor(str(tiny_weights), DETECTION_MIN_CONFIDENCE=0.0)
    assert path == str(tiny_weights) and config.NAME == "tiny"
    assert config.DETECTION_MIN_CONFIDENCE == 0.0
    image = np.random.default_rng(0).integers(0, 255, (70, 90, 3), np.uint8)
    (result,) = predictor.detect([image])
    assert result["rois"].shape[1] == 4
    assert result["keypoints"].shape[1:] == (17, 3)
    assert len(result["scores"]) == len(result["rois"])
