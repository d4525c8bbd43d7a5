"""`mrcnn-kp predict`: detect people and joints in image files or folders (and videos:
mrcnn_kp/commands/predict_video.py).

    mrcnn-kp predict photos/ extra.jpg --weights last --output predictions/
    mrcnn-kp predict photo.jpg --weights torchvision-coco     # named weights, cached

writes one PNG per image (boxes, masks, skeletons) and predictions.json, a COCO-style results
list (one record per person: image_id, file_name, category_id, bbox [x, y, w, h], score,
segmentation as RLE, keypoints [x1, y1, v1, ...]) plus images.json (the image ids, files and
sizes). Files that are not images, truncated or corrupt images, images over --max-pixels and
empty folders are reported and skipped; the rest is still processed. Exit status 0 when at least
one image was processed, 1 otherwise.

The model options (--weights, --config, --logs, --min-confidence, --batch-size, --sha256,
--allow-unverified) are shared with `mrcnn-kp evaluate` and `mrcnn-kp export`
(mrcnn_kp/commands/_shared.py).
"""
import json
import sys
from pathlib import Path

from mrcnn_kp.commands import _shared
from mrcnn_kp.commands._shared import (PICTURE_MIN_SCORE, add_model_arguments, model_errors,
                                      report_error, results_records, unique_stem)

HELP = "detect people and joints in image files or folders, write PNGs and json"


# ---------------------------------------------------------------------------- predict
def add_arguments(parser):
    parser.add_argument("inputs", nargs="*",
                        help="image files and/or folders of images, or video files (see video)")
    add_model_arguments(parser)
    parser.add_argument("--output", "-o", default="predictions",
                        help="folder for the PNGs and predictions.json (default: predictions)")
    parser.add_argument("--recursive", "-r", action="store_true",
                        help="also look into sub-folders")
    parser.add_argument("--max-pixels", type=int, default=None,
                        help="skip images with more pixels than this (default: 64,000,000)")
    parser.add_argument("--no-pictures", action="store_true", help="write only the json")
    parser.add_argument("--picture-min-score", type=float, default=PICTURE_MIN_SCORE,
                        help="draw only detections scoring at least this (default "
                             f"{PICTURE_MIN_SCORE}; predictions.json keeps them all)")
    from mrcnn_kp.commands import predict_video

    predict_video.add_arguments(parser)


def collect_files(inputs, recursive=False):
    """(files, problems): the files named or inside the folders named, in order; problems are
    messages for names that are neither, and for folders without files."""
    files, problems = [], []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            pattern = path.rglob("*") if recursive else path.iterdir()
            found = sorted(p for p in pattern
                           if p.is_file() and not any(part.startswith(".")
                                                      for part in p.relative_to(path).parts))
            if not found:
                problems.append(f"{path}: empty folder (no files to read)")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    return files, problems


def run(args):
    from mrcnn_kp.commands import predict_video
    from mrcnn_kp.inference.predictor import DEFAULT_MAX_PIXELS, ImageReadError, read_image

    if predict_video.wants_video(args):
        return predict_video.run(args)
    if not args.inputs:
        return report_error("predict", "no inputs: give image files, folders or videos")
    files, problems = collect_files(args.inputs, args.recursive)
    for message in problems:
        print(f"skipped {message}", file=sys.stderr)
    if not files:
        return report_error("predict", "no image files to process")
    try:
        predictor, _, _ = _shared.load_model(args)  # looked up now: tests replace it
    except model_errors() as exc:
        return report_error("predict", exc)

    from keras.utils import Progbar

    from mrcnn_kp.inference import visualize
    from mrcnn_kp.utils import atomic_write_text

    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    max_pixels = args.max_pixels or DEFAULT_MAX_PIXELS
    skipped = list(problems)
    pending = {}  # path -> image, for the pictures (at most one batch is held)

    def readable():
        for path in files:
            try:
                image = read_image(path, max_pixels=max_pixels)
            except ImageReadError as exc:
                skipped.append(str(exc))
                print(f"\nskipped {exc}", file=sys.stderr)
                continue
            pending[path] = image
            yield path, image

    images, records, used, people = [], [], set(), 0
    progbar = Progbar(len(files), unit_name="image")
    for path, result in predictor.predict_stream(readable()):
        image = pending.pop(path)
        image_id = len(images) + 1
        stem = unique_stem(path, used)
        images.append({"id": image_id, "file_name": path.name, "path": str(path),
                       "height": int(image.shape[0]), "width": int(image.shape[1])})
        records.extend(results_records(result, image_id, path.name))
        people += len(result["rois"])
        if not args.no_pictures:
            visualize.display_instances(image, result, title=path.name,
                                        path=out_dir / f"{stem}.png",
                                        min_score=args.picture_min_score)
        progbar.update(len(images) + len(skipped) - len(problems))
    atomic_write_text(out_dir / "predictions.json", json.dumps(records))
    atomic_write_text(out_dir / "images.json", json.dumps(images, indent=1))
    print(f"{len(images)} image(s) processed, {people} people found, {len(skipped)} skipped; "
          f"results in {out_dir}/ (predictions.json, images.json"
          f"{'' if args.no_pictures else ', one PNG per image'})")
    return 0 if images else 1
