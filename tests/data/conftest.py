"""Fixtures for tests/data: the real COCO subset loaded once and a tiny synthetic set.

Broken COCO files are built by coco_files.py in temp folders, never from the shared images."""
import pytest

from mrcnn_kp.config import TinyConfig


@pytest.fixture(scope="session")
def coco_dataset(coco_mini):
    """CocoKeypointDataset over the whole real subset (about 1 s)."""
    from mrcnn_kp.data.coco import CocoKeypointDataset

    ann, images = coco_mini
    return CocoKeypointDataset(ann, images)


@pytest.fixture(scope="session")
def synthetic_split(tmp_path_factory):
    """(json_path, image_dir) of a 12-image synthetic train split in a temp folder."""
    from mrcnn_kp.data.synthetic import generate_synthetic_coco

    root = tmp_path_factory.mktemp("synthetic")
    return generate_synthetic_coco(root, num_images=12, image_size=128, seed=3, split="train")


@pytest.fixture
def tiny_config():
    return TinyConfig()
