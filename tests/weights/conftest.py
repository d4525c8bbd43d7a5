"""Fixtures of the weights tests: a stand-in model and the legacy files written from it."""
import pytest

from standin_weights import standin, write_matterport_h5


@pytest.fixture(scope="module")
def source():
    """The model files are written from (never modified by a test)."""
    return standin(seed=0)


@pytest.fixture(scope="module")
def legacy_file(source, tmp_path_factory):
    return write_matterport_h5(source, tmp_path_factory.mktemp("legacy") / "standin.h5")


@pytest.fixture(scope="module")
def coco_file(tmp_path_factory):
    """An 81-class model's file, as mask_rcnn_coco.h5 is."""
    return write_matterport_h5(standin(num_classes=81, seed=0),
                               tmp_path_factory.mktemp("coco") / "mask_rcnn_coco.h5")
