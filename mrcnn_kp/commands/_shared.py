"""What the `mrcnn-kp` commands share: the model options (--weights, --config, --logs,
--min-confidence, --batch-size, --sha256, --allow-unverified), opening the model they name
(through mrcnn_kp.inference.trained_model), the error type whose message is shown to the user,
and the COCO results records of predict and predict_video."""
import os
import sys

# Pictures show detections scoring at least this; the json keeps every detection (COCO AP is
# computed over low-confidence ones too, so the presets for evaluation keep them).
PICTURE_MIN_SCORE = 0.5

WEIGHTS_HELP = ("'last' (newest checkpoint under --logs), a .weights.h5 checkpoint, a legacy "
                "Keras-2 .h5 (matterport), named weights (torchvision-coco, matterport-coco, "
                "...: downloaded, checked, converted and cached on first use), or 'none' "
                "(random weights, for smoke tests)")


class CommandError(Exception):
    """A problem with the command's arguments or inputs; the message is shown to the user."""


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


def weights_error(error):
    """A CommandError worded for the --weights option from a WeightsNotFoundError."""
    hint = "" if error.spec == "last" else f" (expected {WEIGHTS_HELP})"
    return CommandError(f"--weights {error.spec}: {error.reason}{hint}")


def resolve_weights_arg(spec, logs="logs", name=None, sha256=None, allow_unverified=False):
    """trained_model.resolve_weights with its errors worded for --weights."""
    from mrcnn_kp.inference.trained_model import WeightsNotFoundError, resolve_weights

    try:
        return resolve_weights(spec, logs, name=name, sha256=sha256,
                               allow_unverified=allow_unverified)
    except WeightsNotFoundError as error:
        raise weights_error(error) from None


def load_model(args):
    """(Predictor, config, weights path) from the model options."""
    from mrcnn_kp.inference.trained_model import WeightsNotFoundError, open_predictor

    config = load_config_arg(args.config) if args.config else None
    overrides = {}
    if args.min_confidence is not None:
        overrides["DETECTION_MIN_CONFIDENCE"] = args.min_confidence
    if args.batch_size is not None:
        overrides.update(IMAGES_PER_GPU=args.batch_size, GPU_COUNT=1)
    try:
        predictor, config, weights = open_predictor(
            args.weights, config, logs=args.logs, sha256=getattr(args, "sha256", None),
            allow_unverified=getattr(args, "allow_unverified", False), **overrides)
    except WeightsNotFoundError as error:
        raise weights_error(error) from None
    if weights is None:
        print("warning: no weights (--weights none): random initial weights, detections are "
              "meaningless", file=sys.stderr)
    else:
        print(f"weights: {weights}")
    return predictor, config, weights


def report_error(command, exc):
    print(f"mrcnn-kp {command}: error: {exc}", file=sys.stderr)
    return 1


def model_errors():
    """The exception types that mean bad arguments or files rather than a bug."""
    from mrcnn_kp.inference.trained_model import open_errors

    return (CommandError, *open_errors())


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
