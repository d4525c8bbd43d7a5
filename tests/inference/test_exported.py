"""Each export format against Predictor.detect on a model whose detections are not trivial,
and mrcnn_kp.inference.exported, which runs the exports (also for `mrcnn-kp evaluate --model`).

The model: TinyConfig's inference model, seeded, with three layers rescaled so that it
behaves like a trained one where exports can go wrong: RPN scores spread out (not saturated
at 1, so proposals rank by real score differences), box-head scores spread between ~0.5 and
~0.75, and RPN deltas large enough that some proposals leave the image and are clipped to
zero area (they are selected by NMS: the case TFLite's NMS kernel mishandles, see
inference.tflite_nms). It is exported once per format for the whole module.

Tolerances (float32 in other kernels; a misplaced proposal moves boxes by pixels):
SavedModel runs TensorFlow's kernels: boxes and keypoints within 1e-3 px, scores 1e-5.
TFLite and ONNX Runtime: boxes within 0.5 px, scores within 1e-3, keypoints within 1 px, the
same detections in the same order.

Images of several sizes: the canvas size itself, smaller ones that are only padded, and
resized ones. SavedModel and ONNX resize exactly as Predictor does (Pillow, float64);
TFLite, without float64 kernels, resizes in float32, where a few values (up to 0.4 %) can
differ by 1 (tests/inference/test_export_graph.py bounds that on photos): on resized images the
TFLite export is compared with the Keras model run on the TFLite molding, so the same
tolerances hold.
"""
import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from mrcnn_kp.config import TinyConfig  # noqa: E402
from mrcnn_kp.inference import coco_eval, export, export_graph, exported  # noqa: E402
from mrcnn_kp.inference.predictor import Predictor  # noqa: E402

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="exports need the TensorFlow backend")

# layer -> kernel factor (see the module docstring)
SPREAD = {"rpn_class_raw": 0.3, "mrcnn_class_logits": 0.1, "rpn_bbox_pred": 4.0}
SIZES = [(128, 128), (96, 128), (128, 70), (100, 64), (300, 260), (60, 200)]  # last 3 resized


def spread_model(config):
    from mrcnn_kp.model.keypoint_rcnn import build_inference_model

    keras.utils.set_random_seed(0)
    model = build_inference_model(config)
    for name, factor in SPREAD.items():
        layer = model.get_layer(name)
        kernel, *rest = layer.get_weights()
        layer.set_weights([kernel * factor] + rest)
    return model


@pytest.fixture(scope="module")
def tiny():
    config = TinyConfig(IMAGES_PER_GPU=1)
    return config, spread_model(config)


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny):
    """{format: ExportedModel} (ONNX only when its extra is installed)."""
    config, model = tiny
    folder = tmp_path_factory.mktemp("exports")
    paths = {"saved_model": export.export_saved_model(model, config, folder / "tiny")}
    report = export.export_tflite(model, config, folder / "tiny.tflite")
    assert report.builtin_only, report.summary()
    paths["tflite"] = report.path
    if export.onnx_available():
        paths["onnx"] = export.export_onnx(model, config, folder / "tiny.onnx")
    loaded = {}
    for name, path in paths.items():
        try:
            loaded[name] = exported.load_exported(path)
        except RuntimeError:  # onnxruntime missing: the onnx case skips with the reason
            pass
    return loaded


def photo(height, width, seed):
    """A synthetic people picture resized to height x width (what users feed)."""
    from PIL import Image

    from mrcnn_kp.data import synthetic_people

    pixels, _ = synthetic_people.render_image(np.random.default_rng([7, seed]), 128)
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.BILINEAR))


TOLERANCES = {  # boxes px, scores, keypoints px
    "saved_model": (1e-3, 1e-5, 1e-3),
    "tflite": (0.5, 1e-3, 1.0),
    "onnx": (0.5, 1e-3, 1.0),
}


def assert_same_detections(got, want, box_atol, score_atol, keypoint_atol):
    n = len(want["class_ids"])
    assert len(got["class_ids"]) == n and n >= 3
    np.testing.assert_array_equal(got["class_ids"], want["class_ids"])
    np.testing.assert_allclose(got["scores"], want["scores"], atol=score_atol)
    np.testing.assert_allclose(got["rois"], want["rois"], atol=box_atol)
    np.testing.assert_allclose(got["keypoints"][..., :2], want["keypoints"][..., :2],
                               atol=keypoint_atol)
    assert got["masks"].shape == want["masks"].shape
    assert (got["masks"] != want["masks"]).mean() < 1e-3


def test_the_model_selects_zero_area_proposals_and_spread_scores(tiny):
    """What makes the comparisons below discriminating."""
    config, model = tiny
    proposals = keras.Model(model.inputs, model.get_layer("ROI").output)
    molded, metas, _, _ = Predictor(model, config).mold_inputs([photo(128, 128, 0)])
    rois, scores, valid = (np.asarray(v)[0] for v in proposals.predict_on_batch(
        {"input_image": molded, "input_image_meta": metas}))
    area = (rois[:, 2] - rois[:, 0]) * (rois[:, 3] - rois[:, 1])
    assert 3 <= (valid & (area <= 0)).sum() < valid.sum() - 5
    assert len(np.unique(scores[valid])) == valid.sum()  # no ties
    result = Predictor(model, config).detect([photo(128, 128, 0)])[0]
    assert 0.4 < result["scores"].min() < result["scores"].max() < 0.9


@pytest.mark.parametrize("format", exported.FORMATS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_export_detects_what_the_keras_model_detects(exports, tiny, format, size):
    if format not in exports:
        pytest.skip(export.ONNX_MISSING)
    config, model = tiny
    image = photo(*size, seed=size[0])
    resized = max(size) != max(config.IMAGE_SHAPE[:2])
    if format == "tflite" and resized:
        want = detect_on_float32_molding(model, config, image)
    else:
        want = Predictor(model, config).detect([image])[0]
    got = exports[format].detect([image])[0]
    assert_same_detections(got, want, *TOLERANCES[format])


def detect_on_float32_molding(model, config, image):
    """Predictor.detect, with the image molded as the TFLite export molds it."""
    from mrcnn_kp.inference.predictor import unmold_detections

    molded, meta, window, scale = (v.numpy() for v in export_graph.mold_image(
        tf.constant(image), config, exact=False))
    outputs = model.predict_on_batch({"input_image": molded[None],
                                      "input_image_meta": meta[None]})
    return unmold_detections({k: np.asarray(v)[0] for k, v in outputs.items()}, image.shape,
                             tuple(window), float(scale))


def test_tflite_runs_on_litert_and_tensorflow_alike(exports):
    if not exported.litert_available():
        pytest.skip(f"LiteRT not installed: {exported.LITERT_MISSING}")
    path = exports["tflite"].path
    assert exports["tflite"].runtime == "litert"
    image = photo(100, 64, seed=3)
    litert = exported.load_exported(path, tflite_runtime="litert").run(image)
    old = exported.load_exported(path, tflite_runtime="tensorflow").run(image)
    assert sorted(litert) == sorted(old)
    for name in litert:
        np.testing.assert_allclose(litert[name], old[name], atol=1e-4, err_msg=name)


# ----------------------------------------------------------------------------- COCO AP
@pytest.fixture(scope="module")
def keras_ground_truth(tmp_path_factory, tiny):
    """A small COCO set of synthetic pictures whose ground truth is the Keras model's own
    detections scoring >= 0.6: the Keras model scores a high AP on it, and an export scores the
    same only where its detections agree (an untrained model has no AP on real labels). The
    pictures are not resized (each side at most the canvas), where every format molds as
    Predictor does."""
    from PIL import Image

    config, model = tiny
    folder = tmp_path_factory.mktemp("keras_gt")
    (folder / "images").mkdir()
    images, annotations = [], []
    for index, size in enumerate([(128, 128), (128, 96), (80, 128), (128, 128)]):
        image = photo(*size, seed=10 + index)
        Image.fromarray(image).save(folder / "images" / f"{index}.png")
        images.append({"id": index + 1, "file_name": f"{index}.png", "height": size[0],
                       "width": size[1]})
        result = Predictor(model, config).detect([image])[0]
        for i in np.flatnonzero(result["scores"] >= 0.6):
            x1, y1, x2, y2 = (float(v) for v in result["rois"][i])
            joints = np.concatenate([result["keypoints"][i, :, :2],
                                     np.full((17, 1), 2.0)], axis=1)
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1,
                                "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
                                "num_keypoints": 17,
                                "keypoints": [float(v) for v in joints.reshape(-1)]})
    assert len(annotations) >= 6
    path = folder / "person_keypoints_keras.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [
        {"id": 1, "name": "person", "keypoints": [str(k) for k in range(17)], "skeleton": []}]}))
    return path, folder / "images"


def average_precisions(predictor, ground_truth):
    summary = coco_eval.evaluate_coco(predictor, str(ground_truth[0]), image_dir=ground_truth[1],
                                      iou_types=("keypoints", "bbox"), verbose=0)
    return summary["keypoints"]["AP"], summary["bbox"]["AP"]


@pytest.fixture(scope="module")
def keras_ap(tiny, keras_ground_truth):
    config, model = tiny
    return average_precisions(Predictor(model, config), keras_ground_truth)


@pytest.mark.parametrize("format", exported.FORMATS)
def test_export_scores_the_keras_models_coco_ap(exports, keras_ground_truth, keras_ap, format):
    if format not in exports:
        pytest.skip(export.ONNX_MISSING)
    keypoint_ap, box_ap = keras_ap
    assert keypoint_ap > 0.5 and box_ap > 0.5
    got = average_precisions(exports[format], keras_ground_truth)
    np.testing.assert_allclose(got, keras_ap, atol=0.002)


def test_evaluate_command_scores_an_export(exports, keras_ground_truth, keras_ap, capsys):
    from mrcnn_kp import cli

    path, images = keras_ground_truth
    assert cli.main(["evaluate", "--model", exports["tflite"].path, "--dataset", str(path),
                     "--images", str(images), "--iou-types", "keypoints,bbox"]) == 0
    out = capsys.readouterr().out
    assert f"keypoints AP {keras_ap[0]:.3f}" in out and f"bbox      AP {keras_ap[1]:.3f}" in out
    assert "tflite" in out


def test_format_of_names_what_it_cannot_load(tmp_path):
    (tmp_path / "model.h5").write_text("x")
    with pytest.raises(ValueError, match="not an exported model"):
        exported.format_of(tmp_path / "model.h5")
    with pytest.raises(FileNotFoundError, match="not found"):
        exported.load_exported(tmp_path / "missing.tflite")
    assert exported.format_of(tmp_path) == "saved_model"
