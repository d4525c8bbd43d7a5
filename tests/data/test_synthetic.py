"""synthetic: deterministic per seed, valid COCO that pycocotools and COCOeval accept (ground
truth as detections scores keypoint AP 1.0), a reusable cache."""
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mrcnn_kp import constants
from mrcnn_kp.data import synthetic
from mrcnn_kp.data.synthetic import generate_synthetic_coco


def quiet_coco(path):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a = generate_synthetic_coco(tmp_path / "a", num_images=4, image_size=96, seed=11)
    b = generate_synthetic_coco(tmp_path / "b", num_images=4, image_size=96, seed=11)
    c = generate_synthetic_coco(tmp_path / "c", num_images=4, image_size=96, seed=12)
    assert Path(a[0]).read_text() == Path(b[0]).read_text()
    names = sorted(p.name for p in Path(a[1]).iterdir())
    assert len(names) == 4
    for name in names:
        assert (Path(a[1]) / name).read_bytes() == (Path(b[1]) / name).read_bytes()
    assert (Path(a[1]) / names[0]).read_bytes() != (Path(c[1]) / names[0]).read_bytes()
    # image i depends on (seed, split, i) only: a longer set starts with the same images
    d = generate_synthetic_coco(tmp_path / "d", num_images=6, image_size=96, seed=11)
    assert (Path(d[1]) / names[3]).read_bytes() == (Path(a[1]) / names[3]).read_bytes()


def test_ground_truth_as_detections_scores_keypoint_ap_one(synthetic_split):
    json_path, _ = synthetic_split
    gt = quiet_coco(json_path)
    anns = gt.loadAnns(gt.getAnnIds())
    assert len(gt.getImgIds()) == 12 and len(anns) >= 12
    detections = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"],
                   "score": 1.0} for a in anns]
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(detections)
        evaluator = COCOeval(gt, dt, "keypoints")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)  # AP @ OKS .50:.95
    assert evaluator.stats[5] == pytest.approx(1.0)  # AR


def test_records_are_valid_coco_person_keypoints(synthetic_split):
    json_path, image_dir = synthetic_split
    data = json.loads(Path(json_path).read_text())
    category = data["categories"][0]
    assert category["keypoints"] == list(constants.KEYPOINT_NAMES)
    assert len(category["skeleton"]) == 19
    per_image = {}
    for ann in data["annotations"]:
        per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
        kps = np.array(ann["keypoints"]).reshape(17, 3)
        labelled = kps[:, 2] > 0
        assert ann["num_keypoints"] == labelled.sum() >= 1
        assert (kps[labelled, :2] >= 0).all() and (kps[labelled, :2] < 128).all()
        assert (kps[~labelled] == 0).all()  # joints outside the image are (0, 0, 0)
        assert set(kps[:, 2]) <= {0, 1, 2}
        mask = mask_utils.decode(ann["segmentation"])
        assert mask.shape == (128, 128) and mask.sum() == ann["area"] > 0
        x, y, w, h = ann["bbox"]
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert (x, y, x + w, y + h) == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    assert max(per_image.values()) <= 4
    assert all(Path(image_dir, im["file_name"]).is_file() for im in data["images"])


def test_cache_is_reused_and_keyed_by_parameters(tmp_path, monkeypatch):
    monkeypatch.setenv("MRCNN_KP_CACHE", str(tmp_path))
    json_path, image_dir = generate_synthetic_coco(num_images=3, image_size=64, split="val")
    assert Path(json_path).parent.parent.parent == tmp_path / "synthetic"
    assert Path(json_path).name == "person_keypoints_val.json"
    stamp = Path(json_path).stat().st_mtime_ns
    again = generate_synthetic_coco(num_images=3, image_size=64, split="val")
    assert again == (json_path, image_dir) and Path(json_path).stat().st_mtime_ns == stamp
    other = generate_synthetic_coco(num_images=3, image_size=64, seed=1, split="val")
    assert Path(other[0]).parent.parent != Path(json_path).parent.parent
    train = generate_synthetic_coco(num_images=3, image_size=64, split="train")
    assert Path(train[0]).parent.parent == Path(json_path).parent.parent
    train_bytes = (Path(train[1]) / "train_000000.jpg").read_bytes()
    assert train_bytes != (Path(image_dir) / "val_000000.jpg").read_bytes()


def test_synthetic_dataset_loads_through_the_coco_loader(tmp_path):
    dataset = synthetic.synthetic_dataset("val", num_images=5, image_size=64, out_dir=tmp_path)
    data = json.loads(next(tmp_path.glob("val/*.json")).read_text())
    assert dataset.summary["images"] == 5
    assert dataset.summary["persons"] == len(data["annotations"])
    assert dataset.summary["skipped"] == {} and dataset.summary["converted"] == {}
    with pytest.raises(ValueError, match="split must be one of train, val, test"):
        generate_synthetic_coco(tmp_path, num_images=1, split="holdout")
