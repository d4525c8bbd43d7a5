#!/usr/bin/env python
"""Where a training step spends its time: TensorFlow profiler trace, kernels ranked. One JSON line.

    python benchmarks/profile_train_step.py --preset coco_cpu               # its canvas
    python benchmarks/profile_train_step.py --preset default --size 800x1067 --torchvision-like
    python benchmarks/profile_train_step.py --small                         # TinyConfig (tests)

Builds the preset's training model (random weights, SGD as bench_train.py), runs --warmup
untimed train_on_batch steps (tracing), then --steps steps under tf.profiler, reads the trace's
xplane and sums each TensorFlow kernel's time over the executor threads. `top` lists the
costliest kernels (seconds per step and share of all kernel time: on 2 cores, with inter-op
parallelism, kernel time can exceed wall time); `by_layer` sums them per model layer (the name
after the model's prefix, forward and gradient together). TensorFlow backend only.
"""
import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

# Executor bookkeeping events of the trace, not kernels.
NOT_KERNELS = re.compile(r"^(ExecutorState|ParallelFor|ThunkExecutor|BlockUntilReady|"
                         r"CpuExecutable|ThreadpoolListener|EagerExecute|EagerLocalExecute|"
                         r"EagerKernelExecute|KernelAndDeviceFunc|FunctionRun)")


def kernel_times(logdir):
    """{kernel event name: seconds} summed over the trace's TensorFlow compute threads."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    if not paths:
        raise SystemExit(f"no xplane.pb under {logdir}: the profiler wrote nothing")
    space = xplane_pb2.XSpace()
    with open(paths[0], "rb") as f:
        space.ParseFromString(f.read())
    total = collections.Counter()
    for plane in space.planes:
        names = plane.event_metadata
        for line in plane.lines:
            if not line.name.startswith("tf_"):  # tf_Compute, tf_inter_op... threads
                continue
            for event in line.events:
                name = names[event.metadata_id].name
                if not NOT_KERNELS.match(name):
                    total[name] += event.duration_ps / 1e12
    return total


def layer_of(kernel_name):
    """'gradient_tape/coco_cpu_training_1/mrcnn_class_conv1_1/...' -> 'mrcnn_class_conv1'."""
    parts = kernel_name.split(":")[0].split("/")
    if parts and parts[0] == "gradient_tape":
        parts = parts[1:]
    if len(parts) < 3:  # a kernel outside any layer (optimizer, loss glue)
        return parts[0] if parts else kernel_name
    return re.sub(r"_\d+$", "", parts[1])


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="default", help="mrcnn_kp.config.PRESETS key")
    ap.add_argument("--size", choices=sorted(_common.SIZES),
                    help="image size (default: the preset's own canvas)")
    ap.add_argument("--square-canvas", action="store_true",
                    help="with --size: the square canvas of the long side, not the smallest")
    ap.add_argument("--batch", type=int, help="images per step (default: the preset's)")
    ap.add_argument("--torchvision-like", action="store_true",
                    help="torchvision's RoI counts and no mask head (as bench_train.py)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--small", action="store_true", help="TinyConfig at 128 px")
    ap.add_argument("--json-out")
    args = ap.parse_args()

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import tensorflow as tf

    from mrcnn_kp.config import PRESETS
    from mrcnn_kp.model.keypoint_rcnn import build_training_model

    if keras.backend.backend() != "tensorflow":
        raise SystemExit("profile_train_step.py reads TensorFlow's profiler: KERAS_BACKEND must "
                         "be tensorflow")
    preset = "tiny" if args.small else args.preset
    preset_config = PRESETS[preset]()
    overrides = {"GPU_COUNT": 1}
    if args.batch:
        overrides["IMAGES_PER_GPU"] = args.batch
    if args.torchvision_like:
        overrides.update(_common.TORCHVISION_LIKE)
        overrides["TRAIN_ROIS_PER_IMAGE"] = min(overrides["TRAIN_ROIS_PER_IMAGE"],
                                                preset_config.POST_NMS_ROIS_TRAINING)
    if args.size and not args.small:
        height, width = _common.SIZES[args.size]
        canvas = _common.canvas_for(height, width, args.square_canvas)
    else:
        height, width = canvas = tuple(preset_config.IMAGE_SHAPE[:2])
    runtime = _common.cpu_runtime(max(canvas))  # as the commands do, before TF starts
    config = _common.make_config(preset, canvas, **overrides)
    keras.utils.set_random_seed(0)
    model = build_training_model(config)
    model.compile(optimizer=keras.optimizers.SGD(1e-4, momentum=0.9, weight_decay=1e-4))
    data = _common.training_batch(config, height, width)

    started = time.perf_counter()
    for i in range(max(args.warmup, 1)):
        model.train_on_batch(data)
        _common.log(f"warm-up step {i + 1} done at {time.perf_counter() - started:.1f} s")
    warmup_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        started = time.perf_counter()
        for _ in range(args.steps):
            model.train_on_batch(data)
        wall_s = (time.perf_counter() - started) / args.steps
        tf.profiler.experimental.stop()
        kernels = kernel_times(logdir)

    all_s = sum(kernels.values()) / args.steps
    by_layer = collections.Counter()
    for name, seconds in kernels.items():
        by_layer[layer_of(name)] += seconds / args.steps

    def ranked(counter, n):
        return [{"name": name, "s_per_step": round(s, 4), "share": round(s / all_s, 4)}
                for name, s in counter.most_common(n)]

    _common.emit({
        "script": "profile_train_step", "preset": preset, "image_hw": [height, width],
        "canvas": list(canvas), "batch": config.BATCH_SIZE,
        "torchvision_like": args.torchvision_like,
        "warmup_s": round(warmup_s, 2), "wall_s_per_step": round(wall_s, 4),
        "kernel_s_per_step": round(all_s, 4), "runtime": runtime,
        "top": ranked(collections.Counter({k: v / args.steps for k, v in kernels.items()}),
                      args.top),
        "by_layer": ranked(by_layer, args.top),
        "machine": _common.machine(),
    }, args.json_out)


if __name__ == "__main__":
    main()
