"""`mrcnn-kp evaluate`: COCO keypoint / bbox / segm AP of a model on a COCO-format dataset.

    mrcnn-kp evaluate --dataset person_keypoints_val2017.json --images val2017/ --limit 500
    mrcnn-kp evaluate --dataset data/coco_kp_mini/train --results out/results_keypoints.json
    mrcnn-kp evaluate --dataset data/coco_kp_mini/train --model exported/person_kp.tflite

--dataset is the annotation json, or a folder holding one person_keypoints*.json (and images/).
Without --results the model (--weights, --config: see `mrcnn-kp predict --help`) runs over the
images; with --model an exported model (a SavedModel folder, a .tflite or an .onnx file from
`mrcnn-kp export`) runs over them instead, so an export is scored as its Keras model is;
with --results an existing COCO results file is evaluated (and refused, clearly, when
it was made for another dataset). Prints COCOeval's summary per iou type; --output keeps the
results json files, metrics.json and --pictures side-by-side PNGs (ground truth | prediction).
"""
import json
import sys
from pathlib import Path

from mrcnn_kp.commands._shared import (PICTURE_MIN_SCORE, CommandError, add_model_arguments,
                                       model_errors, report_error)

HELP = "COCO keypoint / bbox / segm AP of a model on a COCO-format dataset"


def add_arguments(parser):
    parser.add_argument("--dataset", required=True,
                        help="COCO annotation json, or a folder with one person_keypoints*.json")
    parser.add_argument("--images", default=None,
                        help="image folder (default: images/ beside the json)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N images")
    parser.add_argument("--image-ids", default=None,
                        help="comma-separated COCO image ids to evaluate (default: all)")
    parser.add_argument("--subset", choices=("all", "train", "val"), default="all",
                        help="evaluate one side of the deterministic held-out split that "
                             "`mrcnn-kp train --val-fraction` trained with (default: all)")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="the split's held-out fraction, as given to train (default 0.1)")
    parser.add_argument("--iou-types", default="keypoints,bbox,segm",
                        help="comma-separated subset of keypoints,bbox,segm")
    parser.add_argument("--results", default=None,
                        help="evaluate this COCO results json instead of running a model")
    parser.add_argument("--model", default=None,
                        help="evaluate an exported model (SavedModel folder, .tflite, .onnx) "
                             "instead of --weights; TFLite runs on LiteRT when installed")
    parser.add_argument("--output", "-o", default=None,
                        help="folder for results_<type>.json, metrics.json and pictures")
    parser.add_argument("--pictures", type=int, default=0,
                        help="draw ground truth | prediction PNGs for the first N images "
                             "(needs --output)")
    parser.add_argument("--picture-min-score", type=float, default=PICTURE_MIN_SCORE,
                        help="draw only detections scoring at least this (default "
                             f"{PICTURE_MIN_SCORE}; AP uses them all)")
    add_model_arguments(parser)


def resolve_dataset(value):
    """The annotation json for --dataset (a file, or a folder with one person_keypoints json)."""
    path = Path(value)
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(path.glob("person_keypoints*.json")) or sorted(path.glob("*.json"))
        if len(found) == 1:
            return found[0]
        if not found:
            raise CommandError(f"--dataset {path}: no annotation .json in this folder")
        raise CommandError(f"--dataset {path}: several annotation files "
                           f"({', '.join(p.name for p in found)}); name one")
    raise CommandError(f"--dataset {path}: no such file or folder")


def parse_list(text, cast=str, name="value"):
    try:
        return [cast(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CommandError(f"{name}: expected a comma-separated list, got {text!r}") from None


def run(args):
    from mrcnn_kp.inference import coco_eval

    try:
        annotation = resolve_dataset(args.dataset)
        iou_types = parse_list(args.iou_types, name="--iou-types")
        unknown = sorted(set(iou_types) - set(coco_eval.IOU_TYPES))
        if unknown or not iou_types:
            raise CommandError(f"--iou-types: unknown {unknown}; choose from "
                               f"{', '.join(coco_eval.IOU_TYPES)}")
        image_ids = parse_list(args.image_ids, int, "--image-ids") if args.image_ids else None
        if args.pictures and not args.output:
            raise CommandError("--pictures needs --output (the folder for the PNGs)")
        coco = coco_eval.load_coco(annotation)
        if args.subset != "all":
            from mrcnn_kp.data.coco import split_image_ids

            held = split_image_ids(coco.getImgIds(), args.subset, args.val_fraction)
            if image_ids:
                held_set = set(held)
                image_ids = [i for i in image_ids if i in held_set]
            else:
                image_ids = held
            if not image_ids:
                raise CommandError(f"--subset {args.subset} --val-fraction {args.val_fraction} "
                                   f"selects no image")
        ids = coco_eval.select_image_ids(coco, image_ids, args.limit)
    except (CommandError, FileNotFoundError, ValueError) as exc:
        return report_error("evaluate", exc)
    subset = "" if args.subset == "all" else f" of the {args.subset} subset"
    print(f"dataset: {annotation} ({len(coco.getImgIds())} images, evaluating {len(ids)}{subset})")

    if args.results:
        return _evaluate_results_file(coco, args, iou_types,
                                      ids if (image_ids or args.limit) else None)

    try:
        if args.model:
            predictor, has_masks = _load_exported(args.model)
        else:
            # looked up at call time: a module-level binding would keep whatever load_model
            # was when this module was first imported (tests monkeypatch it)
            from mrcnn_kp.commands import _shared

            predictor, config, _ = _shared.load_model(args)
            has_masks = config.USE_MASK_HEAD
    except model_errors() as exc:
        return report_error("evaluate", exc)
    if "segm" in iou_types and not has_masks:  # e.g. --config torchvision
        iou_types = [t for t in iou_types if t != "segm"]
        print("segm skipped: the model has no mask head (USE_MASK_HEAD is False)"
              if not args.model else "segm skipped: the exported model has no masks")
        if not iou_types:
            return report_error("evaluate", "--iou-types segm needs a model with a mask head")
    on_result = _picture_writer(coco, Path(args.output) / "pictures", args.pictures,
                                args.picture_min_score) \
        if args.pictures else None
    try:
        summary = coco_eval.evaluate_coco(predictor, coco, image_dir=args.images, image_ids=ids,
                                          iou_types=iou_types, out_dir=args.output,
                                          on_result=on_result)
    except (FileNotFoundError, RuntimeError) as exc:
        return report_error("evaluate", exc)
    _print_table(summary)
    return 0


def _load_exported(path):
    """(ExportedModel, whether it outputs masks) for --model, with a line saying what runs."""
    from mrcnn_kp.inference import exported

    try:
        model = exported.load_exported(path)
    except (ValueError, RuntimeError) as exc:  # not an export, or its runtime is missing
        raise CommandError(f"--model {path}: {exc}") from None
    print(f"model: {path} ({model.format}, run by {model.runtime})")
    return model, model.has_masks


def _evaluate_results_file(coco, args, iou_types, image_ids):
    from mrcnn_kp.inference import coco_eval

    summary = {}
    try:
        for iou_type in iou_types:
            summary[iou_type] = coco_eval.evaluate_results_file(coco, args.results, iou_type,
                                                                image_ids=image_ids)
    except (coco_eval.ResultsMismatchError, FileNotFoundError) as exc:
        return report_error("evaluate", exc)
    _print_table(summary)
    if args.output:
        from mrcnn_kp.utils import atomic_write_text

        Path(args.output).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.output) / "metrics.json",
                          json.dumps({"results": str(args.results), "summary": summary}, indent=2))
    return 0


def _picture_writer(coco, folder, count, min_score=0.0):
    from mrcnn_kp.inference import visualize
    from mrcnn_kp.inference.coco_eval import ground_truth_as_detections

    drawn = []

    def draw(image_id, image, result):
        if len(drawn) >= count:
            return
        folder.mkdir(parents=True, exist_ok=True)
        gt = ground_truth_as_detections(coco, image_id)
        drawn.append(visualize.draw_side_by_side(image, gt, result,
                                                 folder / f"{image_id:012d}.png",
                                                 min_score=min_score))

    return draw


def _print_table(summary):
    for iou_type, values in summary.items():
        cells = "  ".join(f"{name} {value:.3f}" for name, value in values.items())
        print(f"{iou_type:9s} {cells}")
    sys.stdout.flush()
