#!/usr/bin/env python
"""Latency of one image per export format against the Keras Predictor: one JSON line.

    python benchmarks/bench_export.py --weights demo_output/logs/<run>/<checkpoint>.weights.h5
    python benchmarks/bench_export.py --config cpu_demo --weights none --formats tflite
    python benchmarks/bench_export.py --small          # TinyConfig, random weights (tests)
    python benchmarks/bench_export.py --weights <ckpt> --models exported/demo,exported/demo.tflite

Exports the model (--config, --weights as `mrcnn-kp export`) to a temporary folder in each
of --formats, then times, on the same uint8 image of --size (a synthetic people picture),
the Keras Predictor.detect (Keras' graph, Pillow molding in numpy) and each export's serving
function as mrcnn_kp.inference.exported runs it: SavedModel by TensorFlow, TFLite by LiteRT
when installed (else tf.lite.Interpreter), ONNX by onnxruntime, each with its default threads.
Median of --repeats calls after one warm-up call. Reports per format median_s, the runtime,
the export's size in bytes and the time the export took, and the CPU share other processes
used meanwhile (`cpu.foreign_frac`, see _common). --models times existing exports (of the
same --weights) instead of exporting again.
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

FORMATS = ("saved_model", "tflite", "onnx")


def folder_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def picture(height, width, seed=0):
    import numpy as np
    from PIL import Image

    from mrcnn_kp.data import synthetic_people

    pixels, _ = synthetic_people.render_image(np.random.default_rng([seed]), max(height, width))
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.BILINEAR))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="cpu_demo", help="preset or config json")
    parser.add_argument("--weights", default="none", help="a .weights.h5, or none (random)")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--size", default=None, help="HxW of the image (default: the canvas)")
    parser.add_argument("--models", default=None,
                        help="comma-separated existing exports to time instead of exporting")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--small", action="store_true", help="TinyConfig, 2 repeats")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)
    import time

    from mrcnn_kp.commands._shared import load_config_arg
    from mrcnn_kp.inference import export, exported
    from mrcnn_kp.inference.predictor import load_predictor

    config = load_config_arg("tiny" if args.small else args.config).copy(IMAGES_PER_GPU=1,
                                                                       GPU_COUNT=1)
    repeats = 2 if args.small else args.repeats
    runtime = _common.cpu_runtime(max(config.IMAGE_SHAPE[:2]))
    weights = None if args.weights == "none" else args.weights
    predictor, _ = load_predictor(config, weights)
    height, width = (int(v) for v in args.size.split("x")) if args.size else \
        tuple(config.IMAGE_SHAPE[:2])
    image = picture(height, width)
    results = {"keras": dict(_common.time_calls(lambda: predictor.detect([image]), repeats),
                             runtime="keras (tensorflow)")}
    if args.models:
        for path in args.models.split(","):
            model = exported.load_exported(path)
            timing = _common.time_calls(lambda: model.run(image), repeats)
            results[model.format] = dict(timing, runtime=model.runtime,
                                         bytes=folder_bytes(path), path=path)
    formats = [] if args.models else [f for f in args.formats.split(",") if f]
    with tempfile.TemporaryDirectory(prefix="bench_export_") as folder:
        for name in formats:
            if name == "onnx" and not export.onnx_available():
                results[name] = {"skipped": export.ONNX_MISSING}
                continue
            path = os.path.join(folder, "model" + {"saved_model": "", "tflite": ".tflite",
                                                   "onnx": ".onnx"}[name])
            _common.log(f"exporting {name}")
            start = time.perf_counter()
            export.export(predictor.model, config, path, format=name)
            export_s = time.perf_counter() - start
            model = exported.load_exported(path)
            timing = _common.time_calls(lambda: model.run(image), repeats)
            results[name] = dict(timing, runtime=model.runtime, bytes=folder_bytes(path),
                                 export_s=round(export_s, 1))
    _common.emit({"bench": "export", "config": config.NAME, "weights": args.weights,
                  "image": [height, width], "repeats": repeats, "runtime": runtime,
                  "machine": _common.machine(), "formats": results}, args.json_out)


if __name__ == "__main__":
    main()
