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
(add_model_arguments / load_model below).
"""
import json
import os
import sys
from pathlib import Path

HELP = "detect people and joints in image files or folders, write PNGs and json"
# Pictures show detections scoring at least this; the json keeps every detection (COCO AP is
# computed over low-confidence ones too, so the presets for evaluation keep them).
PICTURE_MIN_SCORE = 0.5

WEIGHTS_HELP = ("'last' (newest checkpoint under --logs), a .weights.h5 checkpoint, a legacy "
                "Keras-2 .h5 (matterport), named weights (torchvision-coco, matterport-coco, "
                "...: downloaded, checked, converted and cached on first use), or 'none' "
                "(random weights, for smoke tests)")


class CommandError(Exception):
    """A problem with the command's arguments or inputs; the message is shown to the user."""


# ---------------------------------------------------------------------------- shared options
def add_model_arguments(parser):
    parser.add_argument("--weights", default="last", help=WEIGHTS_HELP + " (default: last)")
    parser.add_argument("--config", default=None,
                        help="a preset (default, tiny, cpu_demo, torchvision, ...) or a config "
                             ".json; default: the config saved with the weights, else 'default'")
    parser.add_argument("--logs", default="logs",
                        help="directory of training runs, searched by --weights last "
                             "(default: logs)")
    parser.add_argument("--min-confidence", type=float, default=None,
                        help="override DETECTION_MIN_CONFIDENCE (score threshold)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per model call (overrides IMAGES_PER_GPU)")
    add_named_weights_arguments(parser)


def add_named_weights_arguments(parser):
    """--sha256 / --allow-unverified, for named weights without a recorded hash."""
    parser.add_argument("--sha256", default=None, metavar="HEX",
                        help="expected sha256 of the file behind named --weights (for entries "
                             "without a recorded hash; default: $MRCNN_KP_WEIGHTS_SHA256)")
    parser.add_argument("--allow-unverified", action="store_true",
                        help="download named --weights whose hash is not recorded without "
                             "checking it (the computed sha256 is printed)")


def load_config_arg(value):
    """A Config from a preset name or a config json path."""
    from mrcnn_kp.config import PRESETS, Config

    if value in PRESETS:
        return PRESETS[value]()
    if os.path.isfile(value):
        return Config.from_json(value)
    raise CommandError(f"--config {value!r}: not a preset ({', '.join(PRESETS)}) nor a "
                       f"config .json file")


def find_last_checkpoint(logs, name=None):
    """The newest checkpoint under `logs`: of run directories named `name` when given, else of
    the most recent run directory of any name (by the timestamp in its name)."""
    import re

    from mrcnn_kp.training import checkpoints

    if name is not None:
        try:
            return checkpoints.find_last(logs, name)
        except FileNotFoundError:
            pass
    stamp = re.compile(r"^(?P<name>[\w.-]*?)(?P<stamp>\d{8}T\d{4})$")
    runs = []
    if os.path.isdir(logs):
        for entry in os.listdir(logs):
            match = stamp.match(entry)
            if match and os.path.isdir(os.path.join(logs, entry)):
                runs.append((match.group("stamp"), match.group("name")))
    for _, run_name in sorted(runs, reverse=True):
        try:
            return checkpoints.find_last(logs, run_name)
        except FileNotFoundError:
            continue
    wanted = f"of {name!r} or of any name" if name else "of any name"
    raise CommandError(f"--weights last: no checkpoint in a run directory {wanted} under "
                       f"{os.path.abspath(logs)}; train first, or give a weights file")


def resolve_weights(spec, logs, config=None, sha256=None, allow_unverified=False):
    """The weights file for --weights (None for 'none'); named weights are fetched (downloaded,
    checked, converted and cached on first use) by mrcnn_kp.weights.presets."""
    if spec is None or spec.lower() in ("none", "random"):
        return None
    if spec == "last":
        return find_last_checkpoint(logs, config.NAME if config is not None else None)
    from mrcnn_kp.weights import presets

    if presets.is_named(spec):
        return str(presets.fetch_weights(spec, sha256=sha256,
                                                 allow_unverified=allow_unverified))
    if not os.path.isfile(spec):
        raise CommandError(f"--weights {spec}: no such file (expected {WEIGHTS_HELP})")
    if not spec.endswith((".h5", ".keras")):
        raise CommandError(f"--weights {spec}: not a weights file (expected {WEIGHTS_HELP})")
    return spec


def config_for_weights(weights):
    """The config saved with a checkpoint (in the file, or config.json of its run directory)."""
    if weights is None:
        return None
    from mrcnn_kp.config import Config

    try:
        from mrcnn_kp.weights import read_config

        config = read_config(weights)
    except Exception:  # a legacy file without our attribute, or no weights module
        config = None
    beside = os.path.join(os.path.dirname(os.path.abspath(weights)), "config.json")
    if config is None and os.path.isfile(beside):
        config = Config.from_json(beside)
    return config


def load_model(args):
    """(Predictor, config, weights path) from the shared model options."""
    from mrcnn_kp.inference.predictor import load_predictor

    config = load_config_arg(args.config) if args.config else None
    weights = resolve_weights(args.weights, args.logs, config,
                              sha256=getattr(args, "sha256", None),
                              allow_unverified=getattr(args, "allow_unverified", False))
    if config is None:
        config = config_for_weights(weights) or load_config_arg("default")
    overrides = {}
    if args.min_confidence is not None:
        overrides["DETECTION_MIN_CONFIDENCE"] = args.min_confidence
    if args.batch_size is not None:
        overrides.update(IMAGES_PER_GPU=args.batch_size, GPU_COUNT=1)
    if overrides:
        config = config.copy(**overrides)
    if weights is None:
        print("warning: no weights (--weights none): random initial weights, detections are "
              "meaningless", file=sys.stderr)
    else:
        print(f"weights: {weights}")
    predictor, _ = load_predictor(config, weights)
    return predictor, config, weights


def report_error(command, exc):
    print(f"mrcnn-kp {command}: error: {exc}", file=sys.stderr)
    return 1


def model_errors():
    """The exception types that mean bad arguments or files rather than a bug."""
    from mrcnn_kp.config import ConfigError
    from mrcnn_kp.weights.presets import NamedWeightsError

    errors = [CommandError, ConfigError, FileNotFoundError, NamedWeightsError]
    try:
        from mrcnn_kp.weights import WeightsError

        errors.append(WeightsError)
    except ImportError:
        pass
    return tuple(errors)


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


def unique_stem(path, used):
    stem = path.stem or "image"
    name, k = stem, 1
    while name in used:
        k += 1
        name = f"{stem}_{k}"
    used.add(name)
    return name


def results_records(result, image_id, file_name):
    """One image's detections as combined COCO results records (bbox + segm + keypoints)."""
    from mrcnn_kp.inference.coco_eval import detections_to_coco

    types = ["bbox"] + [t for t, key in (("segm", "masks"), ("keypoints", "keypoints"))
                        if result.get(key) is not None]
    parts = detections_to_coco(result, image_id, iou_types=types)
    records = []
    for i, record in enumerate(parts["bbox"]):
        record = {**record, "file_name": file_name}
        if "segm" in parts:
            record["segmentation"] = parts["segm"][i]["segmentation"]
        if "keypoints" in parts:
            record["keypoints"] = parts["keypoints"][i]["keypoints"]
        records.append(record)
    return records


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
        predictor, _, _ = load_model(args)
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
