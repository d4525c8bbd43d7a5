"""Fixtures of the export tests: the tiny config with one image a call and the stand-in
inference model built for it (tests/inference/export_standin.py), one of each per module."""
import pytest


@pytest.fixture(scope="module")
def config():
    from mrcnn_kp.config import TinyConfig

    return TinyConfig(IMAGES_PER_GPU=1)


@pytest.fixture(scope="module")
def model(config):
    from export_standin import standin_inference_model

    return standin_inference_model(config)
