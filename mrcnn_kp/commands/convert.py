"""`mrcnn-kp convert`: weights from other formats into a Keras 3 `.weights.h5` for our model.

    mrcnn-kp convert mask_rcnn_coco.h5 coco_resnet50.weights.h5 --config default \
        --exclude mrcnn_class_logits mrcnn_bbox_fc mrcnn_mask

builds the model of --config, loads the legacy Keras-2 `.h5` (matterport, Mask_RCNN_Humanpose)
by layer name (mrcnn_kp.weights.load_weights: shape mismatches such as an 81-class head into a
2-class model are skipped and reported), and writes our format with the config stored inside,
so `--weights new.weights.h5` works in train / evaluate / predict / export without --config.
Our own `.weights.h5` and `.keras` files are accepted too (re-saving by name, e.g. into another
config). `--from efficientnet-lite0` writes the ImageNet EfficientNet-Lite0 backbone into a fresh
model.

    mrcnn-kp convert --from torchvision keypointrcnn_resnet50_fpn_coco-fc266e95.pth kp.weights.h5

maps torchvision's Keypoint R-CNN state_dict onto the `--config torchvision` model
(TorchvisionKeypointConfig, the default with --from torchvision; any config with LAYOUT
"torchvision" works) with mrcnn_kp.weights.torchvision, prints what was loaded and every
tensor of the file that was not used, and writes the weights with that config inside.

    mrcnn-kp convert torchvision-coco kp_coco.weights.h5
    mrcnn-kp convert --from torchvision torchvision-coco kp.weights.h5 --config my_tv.json

write named weights (mrcnn_kp.weights.presets: fetched, checked, converted and cached on first
use) to a file of your own, in the weights' own config unless --config names another; with
--from torchvision the published .pth itself (downloaded and checked on first use) is converted
into --config.

Exit status: 0 written, 1 the input could not be converted (message on stderr), 2 not built.
"""
import os
import sys

HELP = "convert weights (legacy Keras-2 .h5, torchvision .pth) to Keras 3 .weights.h5"

SOURCES = ("keras", "torchvision", "efficientnet-lite0")
NOT_BUILT = 2


def add_arguments(parser):
    parser.add_argument("source", nargs="?", default=None,
                        help="the weights to convert: a legacy Keras-2 .h5 (matterport), a "
                             ".weights.h5 or .keras file, named weights (torchvision-coco, "
                             "...); for --from efficientnet-lite0 an optional .pth (default: "
                             "the packaged ImageNet weights)")
    parser.add_argument("output", help="the Keras 3 file to write (must end in .weights.h5)")
    parser.add_argument("--from", dest="source_format", choices=SOURCES, default="keras",
                        help="what `source` is (default: keras, i.e. any Keras .h5 file)")
    parser.add_argument("--config", default=None,
                        help="the model to build: a preset (default, tiny, cpu_demo, "
                             "torchvision) or a config .json (default: torchvision with "
                             "--from torchvision, else default)")
    parser.add_argument("--exclude", nargs="+", default=[], metavar="NAME_OR_REGEX",
                        help="layers to leave at their initial values: names or regular "
                             "expressions (full match), e.g. mrcnn_class_logits 'mrcnn_mask.*'")
    parser.add_argument("--strict", action="store_true",
                        help="fail unless every layer of the model is loaded (no shape "
                             "mismatch, nothing absent from the file)")
    from mrcnn_kp.commands._shared import add_named_weights_arguments

    add_named_weights_arguments(parser)


def run(args):
    from mrcnn_kp.commands._shared import CommandError, load_config_arg, model_errors

    try:
        if not args.output.endswith(".weights.h5"):
            raise CommandError(f"output {args.output!r} must end in .weights.h5 (Keras 3 format)")
        named = _named_source(args)
        if args.config is None:
            args.config = "torchvision" if args.source_format == "torchvision" else "default"
        config = named or load_config_arg(args.config)
        if args.source_format == "torchvision":
            return _from_torchvision(args, config)
        if args.source_format == "efficientnet-lite0":
            return _from_efficientnet_lite0(args, config)
        if args.source is None:
            raise CommandError("give the weights file to convert")
        if not os.path.isfile(args.source):
            raise CommandError(f"{args.source}: no such file")
        return _from_keras(args, config)
    except model_errors() as exc:
        print(f"mrcnn-kp convert: error: {exc}", file=sys.stderr)
        return 1


def _named_source(args):
    """Named weights as `source`: point args.source at a local file. --from keras: the cached
    converted file, whose stored config is returned when --config is not given (else None);
    --from torchvision: the published .pth of a torchvision entry (None)."""
    from mrcnn_kp.weights import presets
    from mrcnn_kp.commands._shared import CommandError, resolve_weights_arg
    from mrcnn_kp.inference.trained_model import config_for_weights

    if args.source_format not in presets.SOURCE_FORMATS \
            or not presets.is_named(args.source):
        return None
    name = args.source
    if args.source_format == "torchvision":
        if presets.get_preset(name).source_format != "torchvision":
            raise CommandError(f"--from torchvision: {name} is not a torchvision file; "
                               f"convert it without --from")
        args.source = str(presets.fetch_source(
            name, sha256=args.sha256, allow_unverified=args.allow_unverified).path)
        return None
    args.source = resolve_weights_arg(name, sha256=args.sha256,
                                      allow_unverified=args.allow_unverified)
    return config_for_weights(args.source) if args.config is None else None


def _build(config):
    from mrcnn_kp.model.keypoint_rcnn import build_inference_model

    return build_inference_model(config)


def _from_keras(args, config):
    from mrcnn_kp.commands._shared import CommandError
    from mrcnn_kp.weights import load_weights, save_weights

    model = _build(config)
    report = load_weights(model, args.source, exclude=args.exclude,
                          skip_mismatch=not args.strict)
    if args.strict and report.absent_from_file:
        raise CommandError(f"--strict: {len(report.absent_from_file)} layers of the model are "
                           f"not in {args.source}: {', '.join(report.absent_from_file[:8])}; "
                           f"nothing written")
    save_weights(model, args.output, config=config)
    print(report.summary())
    print(f"wrote {args.output} ({config.NAME}, {config.BACKBONE}, {config.NUM_CLASSES} classes)")
    return 0


def _from_efficientnet_lite0(args, config):
    from mrcnn_kp.commands._shared import CommandError
    from mrcnn_kp.weights import save_weights

    try:
        from mrcnn_kp.weights.lite0_imagenet import load_imagenet_backbone
    except ImportError:
        print("mrcnn-kp convert --from efficientnet-lite0: not built yet in this version of "
              "mrcnn_kp.", file=sys.stderr)
        return NOT_BUILT
    if config.BACKBONE != "efficientnet_lite0":
        raise CommandError(f"--from efficientnet-lite0 needs a config with BACKBONE "
                           f"'efficientnet_lite0', --config {args.config} has {config.BACKBONE!r}")
    import pickle

    from mrcnn_kp.weights.lite0_imagenet import PretrainedWeightsError

    model = _build(config)
    try:
        report = load_imagenet_backbone(model, config, path=args.source)
    except PretrainedWeightsError as exc:
        raise CommandError(str(exc)) from None
    except pickle.UnpicklingError as exc:  # incl. pth_reader's UnsafePickleError
        raise CommandError(f"{args.source}: {exc}") from None
    save_weights(model, args.output, config=config)
    print(report.summary() if hasattr(report, "summary") else report)
    print(f"wrote {args.output} (ImageNet EfficientNet-Lite0 backbone, heads at initial values)")
    return 0


def _from_torchvision(args, config):
    import pickle

    from mrcnn_kp.commands._shared import CommandError
    from mrcnn_kp.weights.torchvision import TorchvisionWeightsError, convert_torchvision

    if args.source is None:
        raise CommandError("give the torchvision .pth file to convert")
    if not os.path.isfile(args.source):
        raise CommandError(f"{args.source}: no such file")
    if args.exclude:
        raise CommandError("--exclude is not supported with --from torchvision")
    try:
        report = convert_torchvision(args.source, args.output, config)
    except (TorchvisionWeightsError, pickle.UnpicklingError) as exc:
        raise CommandError(f"{args.source}: {exc}") from None
    print(report.summary())
    if args.strict and (report.unused or report.layers_not_set):
        os.remove(args.output)
        raise CommandError(f"--strict: {len(report.unused)} tensors not used, "
                           f"{len(report.layers_not_set)} layers not set; nothing written")
    print(f"wrote {args.output} ({report.config.NAME}, torchvision layout, "
          f"{report.config.BACKBONE})")
    return 0
