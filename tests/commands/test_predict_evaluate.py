"""`mrcnn-kp predict` and `mrcnn-kp evaluate` end to end.

Most tests swap the model for a numpy stand-in (one person in the middle of every image) so they
check the command's files, messages and exit codes in well under a second each; one test runs
the real TinyConfig model with random weights.
"""
import io
import json

import numpy as np
import pytest
from PIL import Image

from mrcnn_kp import cli
from mrcnn_kp.config import TinyConfig
from mrcnn_kp.image_meta import parse_image_meta
from mrcnn_kp.inference import coco_eval
from mrcnn_kp.inference import predictor as predictor_lib


class OnePersonModel:
    """Stand-in inference model: one person filling the middle of each image's window."""

    def __init__(self, config):
        self.config = config

    def predict_on_batch(self, inputs):
        meta = parse_image_meta(inputs["input_image_meta"])
        batch, d = len(meta["window"]), self.config.DETECTION_MAX_INSTANCES
        out = {"boxes": np.zeros((batch, d, 4), np.float32),
               "class_ids": np.zeros((batch, d), np.int32),
               "scores": np.zeros((batch, d), np.float32),
               "masks": np.zeros((batch, d, 28, 28), np.float32),
               "keypoints": np.zeros((batch, d, 17, 3), np.float32),
               "num_detections": np.ones(batch, np.int32)}
        for b, (y1, x1, y2, x2) in enumerate(meta["window"]):
            h, w = y2 - y1, x2 - x1
            box = np.array([x1 + w / 4, y1 + h / 8, x2 - w / 4, y2 - h / 8], np.float32)
            out["boxes"][b, 0] = box
            out["class_ids"][b, 0], out["scores"][b, 0] = 1, 0.9
            out["masks"][b, 0] = 1.0
            out["keypoints"][b, 0, :, 0] = np.linspace(box[0], box[2], 17)
            out["keypoints"][b, 0, :, 1] = np.linspace(box[1], box[3], 17)
            out["keypoints"][b, 0, :, 2] = 2.0
        return out


@pytest.fixture
def standin(monkeypatch):
    """Commands get the stand-in model instead of building the real one."""
    built = []

    def load(config, weights=None):
        built.append((config, weights))
        return predictor_lib.Predictor(OnePersonModel(config), config), None

    monkeypatch.setattr(predictor_lib, "load_predictor", load)
    return built


def write_images(folder, shapes=((120, 90), (64, 200), (100, 100))):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for k, (h, w) in enumerate(shapes):
        path = folder / f"person_{k}.{'png' if k % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(path)
        paths.append(path)
    return paths


def write_bad_files(folder):
    (folder / "notes.txt").write_text("not an image")
    buffer = io.BytesIO()
    Image.fromarray(np.full((80, 80, 3), 77, np.uint8)).save(buffer, format="JPEG")
    (folder / "cut.jpg").write_bytes(buffer.getvalue()[:300])


def test_predict_writes_pictures_and_json_and_skips_bad_inputs(tmp_path, standin, capsys):
    images = tmp_path / "images"
    write_images(images)
    write_bad_files(images)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    code = cli.main(["predict", str(images), str(empty), str(tmp_path / "missing.jpg"),
                     "--weights", "none", "--config", "tiny", "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    assert "notes.txt: not an image" in captured.err
    assert "cut.jpg: truncated or corrupt image" in captured.err
    assert f"{empty}: empty folder" in captured.err
    assert "missing.jpg: no such file or folder" in captured.err
    assert "3 image(s) processed, 3 people found, 4 skipped" in captured.out
    assert standin[0][1] is None and standin[0][0].NAME == "tiny"

    assert sorted(p.name for p in out.glob("*.png")) == ["person_0.png", "person_1.png",
                                                         "person_2.png"]
    picture = np.asarray(Image.open(out / "person_0.png").convert("RGB"), np.float32)
    assert picture.shape[0] > 100 and picture.std() > 10
    records = json.loads((out / "predictions.json").read_text())
    assert len(records) == 3
    for record in records:
        assert set(record) == {"image_id", "file_name", "category_id", "bbox", "score",
                               "segmentation", "keypoints"}
        assert len(record["bbox"]) == 4 and len(record["keypoints"]) == 51
        assert record["category_id"] == 1 and record["score"] == pytest.approx(0.9)
    listing = json.loads((out / "images.json").read_text())
    assert [(i["id"], i["file_name"], i["height"], i["width"]) for i in listing] == [
        (1, "person_0.jpg", 120, 90), (2, "person_1.png", 64, 200), (3, "person_2.jpg", 100, 100)]
    # image 1 is 90 wide, 120 high: the stand-in's person is the middle half of the width
    first = records[0]
    np.testing.assert_allclose(first["bbox"], [22.5, 15, 45, 90], atol=1e-3)
    assert first["segmentation"]["size"] == [120, 90]


def test_predict_with_nothing_readable_fails_clearly(tmp_path, standin, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    write_bad_files(folder)
    code = cli.main(["predict", str(folder), "--weights", "none", "--config", "tiny",
                     "--output", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 1
    assert "0 image(s) processed, 0 people found, 2 skipped" in captured.out
    assert cli.main(["predict", str(tmp_path / "nothing_here")]) == 1
    assert "no image files to process" in capsys.readouterr().err


def test_predict_refuses_huge_images_and_goes_on(tmp_path, standin, capsys):
    write_images(tmp_path / "in", shapes=((60, 60), (300, 300)))
    code = cli.main(["predict", str(tmp_path / "in"), "--weights", "none", "--config", "tiny",
                     "--max-pixels", "10000", "--no-pictures", "--output", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert code == 0
    assert "300x300 (90,000 pixels) is more than the limit of 10,000 pixels" in captured.err
    assert "1 image(s) processed" in captured.out
    assert not list((tmp_path / "o").glob("*.png"))


def test_weights_errors_are_clear(tmp_path, standin, capsys):
    write_images(tmp_path / "in", shapes=((60, 60),))
    code = cli.main(["predict", str(tmp_path / "in"), "--weights", str(tmp_path / "w.h5")])
    assert code == 1
    assert "w.h5: no such file" in capsys.readouterr().err
    code = cli.main(["predict", str(tmp_path / "in"), "--weights", "last", "--logs",
                     str(tmp_path / "logs")])
    assert code == 1
    assert "--weights last: no checkpoint" in capsys.readouterr().err
    code = cli.main(["predict", str(tmp_path / "in"), "--weights", "none", "--config", "huge"])
    assert code == 1
    assert "--config 'huge': not a preset" in capsys.readouterr().err
    assert standin == []


def test_weights_last_finds_the_newest_run_and_its_config(tmp_path, standin, capsys):
    logs = tmp_path / "logs"
    for run, epoch in (("tiny20240101T1200", 2), ("tiny20250101T1200", 1)):
        (logs / run).mkdir(parents=True)
        (logs / run / f"mask_rcnn_tiny_{epoch:04d}.weights.h5").write_bytes(b"")
        TinyConfig(DETECTION_MIN_CONFIDENCE=0.25).to_json(logs / run / "config.json")
    write_images(tmp_path / "in", shapes=((60, 60),))
    code = cli.main(["predict", str(tmp_path / "in"), "--logs", str(logs), "--no-pictures",
                     "--output", str(tmp_path / "o")])
    assert code == 0, capsys.readouterr().err
    config, weights = standin[0]
    assert weights.endswith("tiny20250101T1200/mask_rcnn_tiny_0001.weights.h5")
    assert config.NAME == "tiny" and config.DETECTION_MIN_CONFIDENCE == 0.25


def test_evaluate_runs_the_model_over_coco_and_draws(coco_mini, tmp_path, standin, capsys):
    ann, _ = coco_mini
    out = tmp_path / "eval"
    code = cli.main(["evaluate", "--dataset", str(ann), "--limit", "2", "--weights", "none",
                     "--config", "tiny", "--output", str(out), "--pictures", "1",
                     "--iou-types", "keypoints,bbox"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "evaluating 2" in captured.out and "keypoints AP " in captured.out
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["image_ids"]) == 2
    assert sorted(metrics["summary"]) == ["bbox", "keypoints"]
    assert 0.0 <= metrics["summary"]["bbox"]["AP"] < 1.0
    assert len(list((out / "pictures").glob("*.png"))) == 1
    assert (out / "results_keypoints.json").is_file()


def test_evaluate_subset_is_the_held_out_split_of_train(coco_mini, tmp_path, standin, capsys):
    """--subset val evaluates exactly the images CocoKeypointDataset(subset="val") holds out."""
    from mrcnn_kp.data.coco import CocoKeypointDataset

    ann, images = coco_mini
    out = tmp_path / "eval"
    code = cli.main(["evaluate", "--dataset", str(ann), "--weights", "none", "--config", "tiny",
                     "--subset", "val", "--val-fraction", "0.02", "--output", str(out),
                     "--iou-types", "bbox"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    evaluated = json.loads((out / "metrics.json").read_text())["image_ids"]
    held_out = CocoKeypointDataset(str(ann), str(images), subset="val", val_fraction=0.02,
                                   verify_images=False)
    assert sorted(evaluated) == sorted(info["id"] for info in held_out.image_info)
    assert len(evaluated) == round(0.02 * 919)
    assert f"evaluating {len(evaluated)} of the val subset" in captured.out
    code = cli.main(["evaluate", "--dataset", str(ann), "--weights", "none", "--config", "tiny",
                     "--subset", "val", "--val-fraction", "0.0"])
    assert code == 1 and "selects no image" in capsys.readouterr().err


def test_evaluate_results_files(coco_mini, tmp_path, capsys):
    ann, _ = coco_mini
    coco = coco_eval.load_coco(ann)
    ids = coco.getImgIds()[:5]
    records = []
    for image_id in ids:
        gt = coco_eval.ground_truth_as_detections(coco, image_id, with_masks=False)
        records += coco_eval.detections_to_coco(gt, image_id, iou_types=("bbox",))["bbox"]
    good = tmp_path / "good.json"
    good.write_text(json.dumps(records))
    code = cli.main(["evaluate", "--dataset", str(ann.parent), "--results", str(good),
                     "--iou-types", "bbox", "--image-ids", ",".join(map(str, ids))])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "bbox      AP 1.000" in captured.out
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps([{**records[0], "image_id": 123456789}]))
    code = cli.main(["evaluate", "--dataset", str(ann), "--results", str(foreign),
                     "--iou-types", "bbox"])
    assert code == 1
    assert "results file for another dataset" in capsys.readouterr().err
    code = cli.main(["evaluate", "--dataset", str(ann), "--results", str(good),
                     "--iou-types", "poses"])
    assert code == 1 and "--iou-types: unknown ['poses']" in capsys.readouterr().err


def test_predict_with_the_real_tiny_model(tmp_path, capsys):
    """The real inference model (TinyConfig, random weights) through the CLI on 3 images."""
    write_images(tmp_path / "in")
    out = tmp_path / "out"
    code = cli.main(["predict", str(tmp_path / "in"), "--weights", "none", "--config", "tiny",
                     "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "3 image(s) processed" in captured.out
    assert len(list(out.glob("*.png"))) == 3
    records = json.loads((out / "predictions.json").read_text())
    images = json.loads((out / "images.json").read_text())
    assert [i["id"] for i in images] == [1, 2, 3]
    assert len(records) <= 3 * TinyConfig.DETECTION_MAX_INSTANCES
    for record in records:
        assert record["image_id"] in (1, 2, 3) and len(record["keypoints"]) == 51
        image = images[record["image_id"] - 1]
        x, y, w, h = record["bbox"]
        assert 0 <= x and x + w <= image["width"] + 1e-3 and y + h <= image["height"] + 1e-3


def load_sample_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "samples" / "coco_keypoints" / "coco_keypoints.py"
    spec = importlib.util.spec_from_file_location("coco_keypoints_sample", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sample_script_delegates_to_the_cli(tmp_path, standin, capsys):
    sample = load_sample_script()
    paths = write_images(tmp_path / "in", shapes=((60, 60), (40, 80)))
    code = sample.main(["predict", "--image", str(paths[0]), f"--image={paths[1]}",
                        "--weights", "none", "--config", "tiny", "--output", str(tmp_path / "o")])
    assert code == 0
    assert "2 image(s) processed" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "o").glob("*.png")) == ["person_0.png",
                                                                      "person_1.png"]
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["bogus"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


def test_weights_file_brings_its_config(tmp_path, standin, capsys):
    import keras

    from mrcnn_kp.weights import save_weights

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="mrcnn_probe")])
    path = save_weights(model, tmp_path / "probe.weights.h5",
                        config=TinyConfig(DETECTION_MIN_CONFIDENCE=0.33))
    write_images(tmp_path / "in", shapes=((60, 60),))
    code = cli.main(["predict", str(tmp_path / "in"), "--weights", str(path), "--no-pictures",
                     "--min-confidence", "0.4", "--batch-size", "1",
                     "--output", str(tmp_path / "o")])
    assert code == 0, capsys.readouterr().err
    config, weights = standin[0]
    assert weights == str(path) and config.NAME == "tiny"
    assert config.DETECTION_MIN_CONFIDENCE == 0.4 and config.BATCH_SIZE == 1


def test_evaluate_skips_segm_for_a_model_without_mask_head(coco_mini, tmp_path, standin,
                                                            capsys):
    """--config torchvision (torchvision's keypoint R-CNN has no mask head): the default
    --iou-types keypoints,bbox,segm evaluates keypoints and bbox and says why segm is not."""
    ann, _ = coco_mini
    out = tmp_path / "eval"
    code = cli.main(["evaluate", "--dataset", str(ann), "--limit", "1", "--weights", "none",
                     "--config", "torchvision", "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "segm skipped: the model has no mask head" in captured.out
    assert sorted(json.loads((out / "metrics.json").read_text())["summary"]) == [
        "bbox", "keypoints"]
    assert standin[0][0].LAYOUT == "torchvision"
