"""COCO evaluation: detections -> COCO results json -> pycocotools COCOeval -> a summary dict.

    summary = evaluate_coco(predictor, "person_keypoints_val2017.json", image_dir="val2017",
                            limit=500, out_dir="eval/")
    summary["keypoints"]["AP"]          # OKS AP@[.5:.95], what COCOeval.summarize() prints first

Results records follow the COCO results format, one list per iou type (one json file each,
so pycocotools' `loadRes` reads every file exactly as it reads the official ones):

- bbox:      {image_id, category_id, bbox [x, y, w, h], score}
- segm:      {image_id, category_id, segmentation (compressed RLE, counts as str), score}
- keypoints: {image_id, category_id, keypoints [x1, y1, v1, ..., x17, y17, v17], score}
             v is 1 for every joint (COCOeval reads only x and y of detections). The score is
             the box score (`keypoint_score="box"`, the default, as Detectron and torchvision
             report) or the box score times the mean joint score
             (`keypoint_score="box_x_keypoints"`, meaningful when joint scores are probabilities).

Coordinates: our detections are continuous pixel coordinates (a pixel's centre at i + 0.5);
COCO keypoint annotations are pixel indices (centre at i). `KEYPOINT_OFFSET` converts between
the two (added when ground truth becomes detections, subtracted when detections become COCO
records), and must match what mrcnn_kp.data does when it reads COCO keypoints.
"""
import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np

from mrcnn_kp import constants

IOU_TYPES = ("keypoints", "bbox", "segm")

# The names COCOeval.summarize() prints, in the order of COCOeval.stats.
SUMMARY_NAMES = {
    "keypoints": ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"),
    "bbox": ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
             "ARl"),
    "segm": ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
             "ARl"),
}
KEYPOINT_SCORES = ("box", "box_x_keypoints")

# Added to COCO keypoint indices to make continuous coordinates (see the module docstring).
KEYPOINT_OFFSET = 0.0


class ResultsMismatchError(ValueError):
    """A results file that does not belong to the ground truth it is evaluated against."""


# ---------------------------------------------------------------------------- loading
def load_coco(coco_gt, quiet=True):
    """A pycocotools COCO object from a COCO object, a json path or an already-parsed dict."""
    from pycocotools.coco import COCO

    if isinstance(coco_gt, COCO):
        return coco_gt
    with _maybe_quiet(quiet):
        if isinstance(coco_gt, dict):
            coco = COCO()
            coco.dataset = coco_gt
            coco.createIndex()
            return coco
        path = Path(coco_gt)
        if not path.is_file():
            raise FileNotFoundError(f"COCO annotation file not found: {path}")
        coco = COCO(str(path))
    coco.annotation_file = str(path)  # lets evaluate_coco find images/ beside it
    return coco


# ---------------------------------------------------------------------------- conversions
def detections_to_coco(result, image_id, iou_types=IOU_TYPES, category_ids=None,
                       keypoint_score="box", keypoint_offset=None):
    """One image's detections (a Predictor.detect() dict) -> {iou_type: [COCO result records]}.

    result: rois [n, 4] (x1, y1, x2, y2) original pixels, class_ids [n], scores [n], and
        masks [H, W, n] bool for "segm", keypoints [n, K, 3] (x, y, score) for "keypoints".
    category_ids: maps a class id to a COCO category id (default: the class id itself).
    keypoint_score: "box" (record score = box score) or "box_x_keypoints" (box score times the
        mean joint score).
    """
    if keypoint_score not in KEYPOINT_SCORES:
        raise ValueError(f"keypoint_score must be one of {KEYPOINT_SCORES}, got {keypoint_score!r}")
    unknown = set(iou_types) - set(IOU_TYPES)
    if unknown:
        raise ValueError(f"unknown iou type(s) {sorted(unknown)}; choose from {IOU_TYPES}")
    offset = KEYPOINT_OFFSET if keypoint_offset is None else float(keypoint_offset)
    class_ids = np.asarray(result["class_ids"]).reshape(-1)
    scores = np.asarray(result["scores"], dtype=np.float64).reshape(-1)
    rois = np.asarray(result["rois"], dtype=np.float64).reshape(-1, 4)
    keep = np.flatnonzero(class_ids > 0)
    image_id = int(image_id)

    def category(class_id):
        return int(class_id if category_ids is None else category_ids[int(class_id)])

    out = {t: [] for t in iou_types}
    if "bbox" in out:
        for i in keep:
            x1, y1, x2, y2 = rois[i]
            out["bbox"].append({"image_id": image_id, "category_id": category(class_ids[i]),
                                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                                "score": float(scores[i])})
    if "segm" in out and len(keep):
        from pycocotools import mask as mask_utils

        masks = np.asarray(result["masks"])  # [H, W, n] bool
        rles = mask_utils.encode(np.asfortranarray(masks[:, :, keep].astype(np.uint8)))
        for i, rle in zip(keep, rles):
            rle["counts"] = rle["counts"].decode("ascii")
            out["segm"].append({"image_id": image_id, "category_id": category(class_ids[i]),
                                "segmentation": rle, "score": float(scores[i])})
    if "keypoints" in out and len(keep):
        keypoints = np.asarray(result["keypoints"], dtype=np.float64)  # [n, K, 3]
        for i in keep:
            xy = keypoints[i, :, :2] - offset
            flat = np.concatenate([xy, np.ones((len(xy), 1))], axis=1).reshape(-1)
            score = scores[i]
            if keypoint_score == "box_x_keypoints":
                score = score * float(np.mean(keypoints[i, :, 2]))
            out["keypoints"].append({"image_id": image_id, "category_id": category(class_ids[i]),
                                     "keypoints": [float(v) for v in flat],
                                     "score": float(score)})
    return out


def ground_truth_as_detections(coco_gt, image_id, keypoint_offset=None, include_crowd=False,
                               with_masks=True):
    """The ground truth of one image in Predictor.detect()'s format (scores 1).

    Used to draw ground truth beside predictions, and to check the evaluation (ground truth
    evaluated as detections scores AP 1). Joint scores are COCO's visibility / 2 (2 -> 1.0,
    1 -> 0.5, unlabeled -> 0.0); unlabeled joints sit at (offset, offset).
    """
    coco = load_coco(coco_gt)
    offset = KEYPOINT_OFFSET if keypoint_offset is None else float(keypoint_offset)
    info = coco.imgs[int(image_id)]
    height, width = int(info["height"]), int(info["width"])
    anns = [a for a in coco.imgToAnns.get(int(image_id), []) if include_crowd or not a["iscrowd"]]
    n = len(anns)
    num_keypoints = constants.NUM_KEYPOINTS
    rois = np.zeros((n, 4), np.float32)
    keypoints = np.zeros((n, num_keypoints, 3), np.float32)
    masks = np.zeros((height, width, n if with_masks else 0), bool)
    for i, ann in enumerate(anns):
        x, y, w, h = ann["bbox"]
        rois[i] = (x, y, x + w, y + h)
        kp = np.asarray(ann.get("keypoints") or np.zeros(3 * num_keypoints), np.float32)
        kp = kp.reshape(num_keypoints, 3)
        keypoints[i, :, :2] = kp[:, :2] + offset
        keypoints[i, :, 2] = kp[:, 2] / 2.0
        if with_masks:
            masks[:, :, i] = coco.annToMask(ann).astype(bool)
    out = {
        "rois": rois,
        "class_ids": np.array([a["category_id"] for a in anns], np.int32),
        "scores": np.ones(n, np.float32),
        "masks": masks,
        "keypoints": keypoints,
        "num_keypoints": np.array([a.get("num_keypoints", 0) for a in anns], np.int32),
    }
    if not with_masks:
        del out["masks"]
    return out


# ---------------------------------------------------------------------------- evaluation
def evaluate_results(coco_gt, records, iou_type, image_ids=None, verbose=True):
    """COCOeval of in-memory results records -> {name: value} (SUMMARY_NAMES[iou_type]).

    image_ids restricts the evaluation to these images (default: every image of coco_gt, as
    pycocotools does). With no records at all every value is 0.0 (nothing was found).
    """
    from pycocotools.cocoeval import COCOeval

    if iou_type not in IOU_TYPES:
        raise ValueError(f"unknown iou type {iou_type!r}; choose from {IOU_TYPES}")
    coco = load_coco(coco_gt)
    names = SUMMARY_NAMES[iou_type]
    _check_records(coco, records, iou_type, source="results")
    if not records:
        if verbose:
            print(f"[{iou_type}] no detections: every AP and AR is 0")
        return {name: 0.0 for name in names}
    # loadRes edits the records it is given (ids, areas): hand it copies.
    records = [dict(r) for r in records]
    with _maybe_quiet(True):
        coco_dt = coco.loadRes(records)
        evaluator = COCOeval(coco, coco_dt, iouType=iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        evaluator.summarize()
    if verbose:
        print(f"COCO {iou_type} evaluation on {len(evaluator.params.imgIds)} images:")
        print(printed.getvalue(), end="")
    return {name: float(v) for name, v in zip(names, evaluator.stats)}


def evaluate_results_file(coco_gt, results_json, iou_type, image_ids=None, verbose=True):
    """COCOeval of a COCO results json file; refuses a file made for another dataset."""
    path = Path(results_json)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ResultsMismatchError(f"{path} is not valid json: {exc}") from None
    coco = load_coco(coco_gt)
    _check_records(coco, records, iou_type, source=str(path))
    return evaluate_results(coco, records, iou_type, image_ids=image_ids, verbose=verbose)


def evaluate_coco(predictor, coco_gt, image_dir=None, image_ids=None, limit=None,
                  iou_types=IOU_TYPES, out_dir=None, keypoint_score="box", batch_size=None,
                  on_result=None, verbose=1):
    """Run a model over a COCO-format dataset and evaluate it -> {iou_type: summary dict}.

    predictor: anything with `detect(images) -> [result dict]` (Predictor, MaskRCNN) or a
        plain callable with that signature.
    coco_gt: annotation json path or pycocotools COCO object.
    image_dir: the images (default: images/ beside the json).
    image_ids, limit: evaluate these images (default all, sorted), the first `limit` of them.
    out_dir: where results_<iou_type>.json and metrics.json are written (optional).
    on_result: called as on_result(image_id, image, result) for every image (e.g. to draw).
    Images that cannot be read are reported and left out of the evaluation.
    """
    from mrcnn_kp.inference.predictor import ImageReadError, read_image

    coco = load_coco(coco_gt)
    ids = select_image_ids(coco, image_ids, limit)
    image_dir = _image_dir(coco, image_dir)
    detect = getattr(predictor, "detect", predictor)
    if batch_size is None:
        config = getattr(predictor, "config", None)
        batch_size = getattr(config, "BATCH_SIZE", 1)
    records = {t: [] for t in iou_types}
    evaluated, skipped = [], []
    progbar = _progbar(len(ids), verbose)
    for start in range(0, len(ids), batch_size):
        chunk, images = [], []
        for image_id in ids[start:start + batch_size]:
            path = image_dir / coco.imgs[image_id]["file_name"]
            try:
                images.append(read_image(path))
                chunk.append(image_id)
            except ImageReadError as exc:
                skipped.append(image_id)
                print(f"skipped image {image_id}: {exc}")
        if images:
            for image_id, image, result in zip(chunk, images, detect(images)):
                if on_result is not None:
                    on_result(image_id, image, result)
                for t, recs in detections_to_coco(result, image_id, iou_types,
                                                  keypoint_score=keypoint_score).items():
                    records[t].extend(recs)
            evaluated.extend(chunk)
        if progbar is not None:
            progbar.update(min(start + batch_size, len(ids)))
    if not evaluated:
        raise RuntimeError(f"none of the {len(ids)} images could be read from {image_dir}")
    if skipped:
        print(f"{len(skipped)} of {len(ids)} images could not be read and are not evaluated")
    summary = {t: evaluate_results(coco, records[t], t, image_ids=evaluated, verbose=bool(verbose))
               for t in iou_types}
    if out_dir is not None:
        from mrcnn_kp.utils import atomic_write_text

        os.makedirs(out_dir, exist_ok=True)
        for t in iou_types:
            atomic_write_text(os.path.join(out_dir, f"results_{t}.json"), json.dumps(records[t]))
        atomic_write_text(os.path.join(out_dir, "metrics.json"), json.dumps(
            {"image_ids": evaluated, "skipped_image_ids": skipped, "summary": summary},
            indent=2))
    return summary


def select_image_ids(coco_gt, image_ids=None, limit=None):
    """The image ids to evaluate: the given ones (checked) or all, sorted; the first `limit`."""
    coco = load_coco(coco_gt)
    known = set(coco.getImgIds())
    if image_ids is None:
        ids = sorted(known)
    else:
        ids = [int(i) for i in image_ids]
        missing = [i for i in ids if i not in known]
        if missing:
            raise ValueError(f"image id(s) {missing[:10]} are not in the annotation file "
                             f"({len(known)} images)")
    if limit is not None:
        if int(limit) < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        ids = ids[:int(limit)]
    return ids


# ---------------------------------------------------------------------------- helpers
def _check_records(coco, records, iou_type, source):
    if not isinstance(records, list) or any(not isinstance(r, dict) for r in records):
        raise ResultsMismatchError(f"{source}: COCO results must be a json list of objects")
    missing_field = [i for i, r in enumerate(records)
                     if "image_id" not in r or "score" not in r or "category_id" not in r]
    if missing_field:
        raise ResultsMismatchError(f"{source}: record {missing_field[0]} lacks image_id, "
                                   f"category_id or score")
    field = {"keypoints": "keypoints", "bbox": "bbox", "segm": "segmentation"}[iou_type]
    lacking = [i for i, r in enumerate(records) if field not in r]
    if lacking:
        raise ResultsMismatchError(f"{source}: record {lacking[0]} has no {field!r}, so it "
                                   f"cannot be evaluated as {iou_type}")
    known = set(coco.getImgIds())
    foreign = sorted({int(r["image_id"]) for r in records} - known)
    if foreign:
        raise ResultsMismatchError(
            f"results file for another dataset: {source} names {len(foreign)} image id(s) that "
            f"are not in the ground truth ({len(known)} images), e.g. {foreign[:5]}")
    categories = set(coco.getCatIds())
    foreign_cats = sorted({int(r["category_id"]) for r in records} - categories)
    if foreign_cats:
        raise ResultsMismatchError(
            f"results file for another dataset: {source} uses category id(s) {foreign_cats[:5]} "
            f"that the ground truth does not have ({sorted(categories)})")


def _image_dir(coco, image_dir):
    if image_dir is not None:
        path = Path(image_dir)
    else:
        annotation_file = getattr(coco, "annotation_file", None)
        if annotation_file is None:
            raise ValueError("image_dir is required when coco_gt is not a json path")
        path = Path(annotation_file).parent / "images"
    if not path.is_dir():
        raise FileNotFoundError(f"image folder not found: {path}")
    return path


def _progbar(total, verbose):
    if not verbose or total <= 1:
        return None
    from keras.utils import Progbar

    return Progbar(total, unit_name="image")


@contextlib.contextmanager
def _maybe_quiet(quiet):
    if quiet:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    else:
        yield
