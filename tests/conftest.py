"""Shared test fixtures: where the real COCO subset lives, temp dirs, backend facts.

The real-data fixtures look for the COCO keypoint subset in $MRCNN_KP_COCO_MINI, then in
../shared/data/coco_kp_mini/train beside the repository. Missing data skips the test with the
reason, except under CI=true, where it fails: CI must prove the real-data claims.
"""
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_COCO_MINI = REPO_ROOT.parent / "shared" / "data" / "coco_kp_mini" / "train"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def coco_mini_dir():
    return Path(os.environ.get("MRCNN_KP_COCO_MINI", DEFAULT_COCO_MINI))


@pytest.fixture(scope="session")
def coco_mini():
    """(annotation json path, image folder) of the real COCO subset."""
    root = coco_mini_dir()
    ann = root / "person_keypoints_train.json"
    images = root / "images"
    if not ann.is_file() or not images.is_dir():
        msg = (f"real COCO subset not found at {root} (set MRCNN_KP_COCO_MINI to the folder "
               f"holding person_keypoints_train.json and images/)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return ann, images


@pytest.fixture(scope="session")
def keras_backend():
    import keras

    return keras.backend.backend()


def require_optional(module, install):
    """Import an optional dependency, or skip the test saying how to install it; under CI=true
    (where requirements-test.txt installs it) a missing one fails the test."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        msg = f"{module} is not installed ({install})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def av():
    """PyAV, for the video tests (pip install 'mrcnn_kp[video]')."""
    return require_optional("av", "pip install 'mrcnn_kp[video]'")
