"""The COCOeval wrapper on the real COCO subset (the coco_mini fixture, read in place)."""
import contextlib
import copy
import io
import json

import numpy as np
import pytest

from mrcnn_kp.inference import coco_eval
from mrcnn_kp.inference.coco_eval import (ResultsMismatchError, detections_to_coco,
                                          evaluate_coco, evaluate_results,
                                          evaluate_results_file, ground_truth_as_detections)


@pytest.fixture(scope="module")
def coco(coco_mini):
    return coco_eval.load_coco(coco_mini[0])


@pytest.fixture(scope="module")
def gt_keypoint_records(coco):
    """Every person with keypoints of the subset, turned into a keypoints results record."""
    records = []
    for image_id in coco.getImgIds():
        gt = ground_truth_as_detections(coco, image_id, with_masks=False)
        recs = detections_to_coco(gt, image_id, iou_types=("keypoints",))["keypoints"]
        records.extend(r for r, n in zip(recs, gt["num_keypoints"]) if n > 0)
    return records


def direct_pycocotools(coco, records, iou_type):
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, coco.loadRes(copy.deepcopy(records)), iouType=iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def test_ground_truth_as_detections_scores_keypoint_ap_1(coco, gt_keypoint_records, capsys):
    assert len(gt_keypoint_records) == 1648  # persons with num_keypoints > 0 in the subset
    summary = evaluate_results(coco, gt_keypoint_records, "keypoints")
    assert list(summary) == ["AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm",
                             "ARl"]
    for name in ("AP", "AP50", "AP75", "APm", "AR", "AR50", "AR75", "ARm", "ARl"):
        assert summary[name] == 1.0, name
    # APl: pycocotools' greedy matching prefers a not-ignored ground truth, so in the large
    # range a few crowded persons steal each other's match (0.99966 on this subset).
    assert summary["APl"] > 0.999
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets= 20 ] = 1.000" \
        in capsys.readouterr().out


def test_jittered_keypoints_give_what_pycocotools_gives(coco, gt_keypoint_records):
    rng = np.random.default_rng(0)
    records = copy.deepcopy(gt_keypoint_records)
    for record in records:
        kp = np.asarray(record["keypoints"]).reshape(-1, 3)
        kp[:, :2] += rng.normal(0.0, 4.0, (len(kp), 2))
        record["keypoints"] = kp.reshape(-1).tolist()
        record["score"] = float(rng.uniform(0.05, 1.0))
    records = [r for r in records if rng.uniform() > 0.1]  # and miss about 10% of people
    ours = evaluate_results(coco, records, "keypoints", verbose=False)
    direct = direct_pycocotools(coco, records, "keypoints")
    assert list(ours.values()) == [float(v) for v in direct]
    assert 0.3 < ours["AP"] < 0.95  # the jitter did change the score


def test_detections_to_coco_record_formats():
    masks = np.zeros((6, 8, 2), bool)
    masks[1:3, 2:5, 0] = True
    masks[4, 0, 1] = True
    keypoints = np.zeros((2, 17, 3), np.float32)
    keypoints[0, 0] = [3.5, 2.0, 0.5]
    keypoints[0, :, 2] = 0.5
    result = {"rois": np.array([[2, 1, 5, 3], [0, 4, 1, 5]], np.float32),
              "class_ids": np.array([1, 1]), "scores": np.array([0.9, 0.4], np.float32),
              "masks": masks, "keypoints": keypoints}
    out = detections_to_coco(result, 139)
    assert out["bbox"][0] == {"image_id": 139, "category_id": 1, "bbox": [2.0, 1.0, 3.0, 2.0],
                              "score": pytest.approx(0.9)}
    kp = out["keypoints"][0]["keypoints"]
    assert len(kp) == 51 and kp[:3] == [3.5, 2.0, 1.0] and kp[5::3] == [1.0] * 16
    from pycocotools import mask as mask_utils

    rle = out["segm"][0]["segmentation"]
    assert isinstance(rle["counts"], str) and rle["size"] == [6, 8]
    assert mask_utils.area({**rle, "counts": rle["counts"].encode()}) == 6
    json.dumps(out)  # plain json types throughout
    scaled = detections_to_coco(result, 139, iou_types=("keypoints",),
                                keypoint_score="box_x_keypoints")
    assert scaled["keypoints"][0]["score"] == pytest.approx(0.45)
    with pytest.raises(ValueError, match="keypoint_score must be one of"):
        detections_to_coco(result, 139, keypoint_score="mean")


def test_results_file_for_another_dataset_is_refused(coco, tmp_path):
    foreign = tmp_path / "results.json"
    foreign.write_text(json.dumps([{"image_id": 999999999, "category_id": 1, "score": 0.5,
                                    "keypoints": [0.0] * 51}]))
    with pytest.raises(ResultsMismatchError, match="results file for another dataset"):
        evaluate_results_file(coco, foreign, "keypoints")
    image_id = coco.getImgIds()[0]
    wrong_category = tmp_path / "cats.json"
    wrong_category.write_text(json.dumps([{"image_id": image_id, "category_id": 18,
                                           "score": 0.5, "bbox": [0, 0, 5, 5]}]))
    with pytest.raises(ResultsMismatchError, match=r"category id\(s\) \[18\]"):
        evaluate_results_file(coco, wrong_category, "bbox")
    with pytest.raises(ResultsMismatchError, match="has no 'keypoints'"):
        evaluate_results_file(coco, wrong_category, "keypoints")


def test_results_file_round_trip_and_empty_results(coco, gt_keypoint_records, tmp_path):
    image_ids = sorted({r["image_id"] for r in gt_keypoint_records})[:20]
    records = [r for r in gt_keypoint_records if r["image_id"] in set(image_ids)]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(records))
    summary = evaluate_results_file(coco, path, "keypoints", image_ids=image_ids, verbose=False)
    assert summary["AP"] == 1.0
    assert evaluate_results(coco, [], "bbox", verbose=False)["AP"] == 0.0


class EchoGroundTruth:
    """A stand-in predictor that answers each image with its ground truth, in call order."""

    def __init__(self, coco, image_ids):
        self.answers = [ground_truth_as_detections(coco, i) for i in image_ids]
        self.seen_shapes = []

    def detect(self, images):
        self.seen_shapes.extend(image.shape for image in images)
        return [self.answers.pop(0) for _ in images]


def test_evaluate_coco_runs_predictor_writes_files_and_summarises(coco, coco_mini, tmp_path):
    # images whose persons all have keypoints (a keypoint-less person would be a keypoint FP)
    complete = [i for i in coco.getImgIds()
                if all(a["num_keypoints"] > 0 for a in coco.imgToAnns[i] if not a["iscrowd"])]
    image_ids = complete[:4]
    echo = EchoGroundTruth(coco, image_ids[:3])
    summary = evaluate_coco(echo, coco_mini[0], image_ids=image_ids, limit=3, out_dir=tmp_path,
                            batch_size=2, verbose=0)
    image_ids = image_ids[:3]
    assert sorted(summary) == ["bbox", "keypoints", "segm"]
    assert summary["bbox"]["AP"] == 1.0 and summary["segm"]["AP"] == 1.0
    assert summary["keypoints"]["AP"] == 1.0
    assert echo.seen_shapes == [(coco.imgs[i]["height"], coco.imgs[i]["width"], 3)
                                for i in image_ids]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["image_ids"] == image_ids and metrics["summary"]["bbox"]["AP"] == 1.0
    bbox = json.loads((tmp_path / "results_bbox.json").read_text())
    assert {r["image_id"] for r in bbox} == set(image_ids)


def test_select_image_ids_checks_ids(coco):
    first = coco.getImgIds()[0]
    assert coco_eval.select_image_ids(coco, [first]) == [first]
    with pytest.raises(ValueError, match=r"image id\(s\) \[-5\] are not in the annotation"):
        coco_eval.select_image_ids(coco, [first, -5])
