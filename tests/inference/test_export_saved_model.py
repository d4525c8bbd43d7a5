"""export_saved_model: `serving_default` serves any image size as the Predictor detects (pasted
masks included), `serve_molded` is the raw model; on the stand-in model and the real
TinyConfig model. Tolerances: tests/inference/export_standin.py."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from export_standin import (assert_matches_predictor, image_of,  # noqa: E402
                            predictor_result)
from mrcnn_kp.config import TinyConfig  # noqa: E402
from mrcnn_kp.inference import export_saved_model  # noqa: E402
from mrcnn_kp.inference.predictor import Predictor  # noqa: E402

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="exports need the TensorFlow backend")


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, model, config):
    path = tmp_path_factory.mktemp("export") / "standin"
    export_saved_model.export_saved_model(model, config, path, paste_masks=True)
    return tf.saved_model.load(str(path))


@pytest.mark.parametrize("height, width", [(100, 64), (300, 260)])
def test_saved_model_serves_any_image_size_like_the_predictor(saved_model, model, config,
                                                              height, width):
    image = image_of(height, width, seed=height)
    out = saved_model.signatures["serving_default"](image=tf.constant(image))
    out = {name: value.numpy() for name, value in out.items()}
    ref = predictor_result(model, config, image)
    assert_matches_predictor(out, ref, box_atol=1e-3, score_atol=1e-5)
    n = len(ref["class_ids"])
    assert out["masks"].shape == (config.DETECTION_MAX_INSTANCES, height, width)
    assert (out["masks"][:n].transpose(1, 2, 0).astype(bool) != ref["masks"]).mean() < 1e-4


def test_saved_model_serve_molded_is_the_raw_model(saved_model, model, config):
    molded, metas, _, _ = Predictor(model, config).mold_inputs([image_of(90, 128)])
    out = saved_model.signatures["serve_molded"](input_image=tf.constant(molded),
                                                 input_image_meta=tf.constant(metas))
    want = model.predict_on_batch({"input_image": molded, "input_image_meta": metas})
    for name in want:
        np.testing.assert_allclose(out[name].numpy(), want[name], atol=1e-5, err_msg=name)


# ----------------------------------------------------------------------------- the real model
@pytest.fixture(scope="module")
def real_model():
    from mrcnn_kp.model.keypoint_rcnn import build_inference_model

    config = TinyConfig(IMAGES_PER_GPU=1)  # DETECTION_MIN_CONFIDENCE 0: D detections
    keras.utils.set_random_seed(0)
    return config, build_inference_model(config)


def test_real_model_saved_model_matches_the_predictor(tmp_path, real_model):
    config, model = real_model
    image = image_of(100, 64, seed=11)
    ref = predictor_result(model, config, image)
    export_saved_model.export_saved_model(model, config, tmp_path / "tiny")
    serve = tf.saved_model.load(str(tmp_path / "tiny")).signatures["serving_default"]
    out = {name: value.numpy() for name, value in serve(image=tf.constant(image)).items()}
    assert_matches_predictor(out, ref, box_atol=1e-3, score_atol=1e-5)
