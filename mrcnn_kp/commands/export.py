"""`mrcnn-kp export`: the inference model as a SavedModel, a TFLite file or an ONNX file.

    mrcnn-kp export --format saved_model --weights last --output exported/person_kp
    mrcnn-kp export --format tflite --weights run/epoch_010.weights.h5 -o person_kp.tflite

Every format takes one uint8 RGB image of any size and returns boxes, class_ids, scores,
keypoints and masks in original-image pixels (mrcnn_kp.inference.export describes the
signature). TFLite says which ops needed TensorFlow's Flex delegate; ONNX needs the [onnx] extra.
`mrcnn-kp evaluate --model <export>` scores the export as the Keras model is scored
(docs/DEPLOYMENT.md).
Exports need the TensorFlow backend. Exit status: 0 written, 1 error (message on stderr).
"""
import os
import sys

HELP = "export a model for deployment (saved_model, tflite, onnx)"

SUFFIXES = {"saved_model": "", "tflite": ".tflite", "onnx": ".onnx"}


def add_arguments(parser):
    from mrcnn_kp.commands._shared import add_model_arguments

    parser.add_argument("--format", "-f", choices=tuple(SUFFIXES), default="saved_model",
                        help="saved_model (a folder), tflite or onnx (default: saved_model)")
    add_model_arguments(parser)
    parser.add_argument("--output", "-o", default=None,
                        help="where to write (default: exported/<config NAME> + .tflite/.onnx)")
    parser.add_argument("--paste-masks", action="store_true",
                        help="output full-image uint8 masks [D, H, W] instead of the 28x28 "
                             "box-relative probabilities")


def run(args):
    from mrcnn_kp.commands import _shared
    from mrcnn_kp.commands._shared import CommandError, model_errors

    try:
        from mrcnn_kp.inference import export as exporter

        if args.format == "onnx" and not exporter.onnx_available():
            raise CommandError(exporter.ONNX_MISSING)
        predictor, config, _ = _shared.load_model(args)
        output = args.output or os.path.join("exported", config.NAME + SUFFIXES[args.format])
        if args.format == "saved_model" and os.path.isfile(output):
            raise CommandError(f"--output {output} is a file; a SavedModel is a folder")
        result = exporter.export(predictor.model, config, output, format=args.format,
                                 paste_masks=args.paste_masks)
        if args.format == "tflite":
            print(result.summary())
        else:
            print(f"wrote {output} ({args.format})")
        return 0
    except (*model_errors(), RuntimeError) as exc:
        print(f"mrcnn-kp export: error: {exc}", file=sys.stderr)
        return 1
