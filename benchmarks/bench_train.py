#!/usr/bin/env python
"""Training step time, images/s and peak memory at batch 1, 2 (and 8): one JSON line.

    python benchmarks/bench_train.py                            # ResNet-50, 800x1067, b 1, 2
    python benchmarks/bench_train.py --preset cpu_demo --batches 1,2,8
    python benchmarks/bench_train.py --torchvision-like         # torchvision's RoI counts
    python benchmarks/bench_train.py --small                    # TinyConfig, seconds (tests)

A step = train_on_batch (graph mode: forward with the six losses, backward, SGD(1e-4,
momentum 0.9, weight decay 1e-4) update), random weights, random images of --size molded into
the canvas (832x1088 for 800x1067; --square-canvas: 1088x1088) with torchvision's benchmark
persons (3 per image, 17 joints). One warm-up step (tracing), then --repeats steps, median
(--small runs eagerly: a smoke test). A step's GFLOP are counted by mrcnn_kp.model.flops: the
forward and the backward that the trainable layers need (weight gradients, input gradients
after the first trainable layer; the loss and target layers' few FLOPs aside); gflop_per_s,
and utilization of the matmul peak measured in the same process follow. Each batch size runs
in its own subprocess, so its peak RSS is its own.
--torchvision-like matches torchvision's training set-up (torchvision_side.py): 512 RoIs per image in the box
head, 32 in the keypoint head, no mask head, and the trainer's stage "3+" (conv1 and res2
frozen: torchvision's trainable_backbone_layers=3; batch norm frozen with no trainable
gamma/beta, like its FrozenBatchNorm2d: TRAIN_BN False, the default). Without it every layer
trains, batch-norm gamma/beta included. --layers picks the trainer's stage instead (heads, 3+,
4+, 5+, all or a regex): the peak memory per stage shows where a step's memory goes.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def one_batch(args, batch):
    """Time train steps at one batch size in this process; the case's dict."""
    preset, (height, width) = (("tiny", (96, 128)) if args.small
                               else (args.preset, _common.SIZES[args.size]))
    canvas = _common.canvas_for(height, width, args.square_canvas)
    runtime = _common.cpu_runtime(max(canvas))
    import keras
    import numpy as np

    from mrcnn_kp.model.flops import count_flops
    from mrcnn_kp.model.keypoint_rcnn import build_training_model

    overrides = dict(IMAGES_PER_GPU=batch, GPU_COUNT=1)
    overrides.update(_common.apply_precision(args.precision))
    if args.torchvision_like:
        overrides.update(_common.TORCHVISION_LIKE)
        # TinyConfig has only POST_NMS_ROIS_TRAINING (64) proposals to sample from
        overrides["TRAIN_ROIS_PER_IMAGE"] = min(
            overrides["TRAIN_ROIS_PER_IMAGE"], _common.make_config(preset).POST_NMS_ROIS_TRAINING)
    config = _common.make_config(preset, canvas, **overrides)
    keras.utils.set_random_seed(0)
    model = build_training_model(config)
    layers = args.layers or ("3+" if args.torchvision_like else None)
    if layers:
        from mrcnn_kp.training.stages import set_trainable

        set_trainable(model, layers, config)
    optimizer = keras.optimizers.SGD(1e-4, momentum=0.9, weight_decay=1e-4)
    if args.precision == "mixed_float16":  # float16 gradients need loss scaling
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, run_eagerly=args.small)  # --small: no tracing, seconds
    data = _common.training_batch(config, height, width)
    losses = {}

    def step():
        losses.update(model.train_on_batch(data, return_dict=True))

    timing = _common.time_calls(step, args.repeats)
    peak_rss = _common.rss_mib()  # before the matmul peak's own buffers
    timing["device_peak_mib"] = _common.device_peak_mib()  # GPU (JAX) only, else None
    flops = count_flops(model, batch=batch)  # forward + the backward of the trainable layers
    peak = _common.matmul_peak_gflops(args.precision, size=256 if args.small else 4096)
    timing.update(_common.flop_rate(flops["total"] + flops["backward"], timing["median_s"],
                                    peak, args.datasheet_tflops),
                  forward_gflop=round(flops["total"] / 1e9, 2), matmul_peak_gflop_per_s=peak)
    timing.update(
        batch=batch, images_per_s=round(batch / timing["median_s"], 3),
        loss_finite=bool(all(np.isfinite(float(v)) for v in losses.values())),
        losses_last={k: round(float(v), 4) for k, v in losses.items()},
        box_head_rois_per_image=config.TRAIN_ROIS_PER_IMAGE,
        mask_head=bool(config.USE_MASK_HEAD), layers=layers or "every layer",
        precision=args.precision,
        trainable_params=int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        peak_rss_mib=peak_rss, runtime=runtime)
    from mrcnn_kp.model.roi_targets import keypoint_slots

    timing["keypoint_head_rois_per_image"] = keypoint_slots(config)
    return {"preset": preset, "image_hw": [height, width], "canvas": list(canvas),
            "case": timing}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="default", help="mrcnn_kp.config.PRESETS key")
    ap.add_argument("--size", default="800x1067", choices=sorted(_common.SIZES))
    ap.add_argument("--batches", default="1,2", help="batch sizes, e.g. 1,2,8")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--torchvision-like", action="store_true",
                    help="torchvision's RoI counts, no mask head, conv1/res2 frozen")
    ap.add_argument("--layers", help="train only this stage's layers (heads, 3+, 4+, 5+, all, a "
                    "regex; default: every layer, or 3+ with --torchvision-like)")
    ap.add_argument("--precision", default="float32", choices=_common.PRECISIONS,
                    help="Keras dtype policy (mixed_float16 wraps SGD in a LossScaleOptimizer)")
    ap.add_argument("--small", action="store_true", help="TinyConfig at 128 px")
    ap.add_argument("--square-canvas", action="store_true",
                    help="the square canvas of the long side (1088 x 1088 for 800x1067) instead "
                         "of the smallest one (832 x 1088)")
    ap.add_argument("--datasheet-tflops", type=float,
                    help="the device's peak TFLOP/s in the compute dtype (a GPU's datasheet "
                         "dense figure): adds mfu beside utilization (of the measured matmul "
                         "peak)")
    ap.add_argument("--child-batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--json-out")
    args = ap.parse_args()

    if args.child_batch:
        _common.emit(one_batch(args, args.child_batch))
        return
    result = {"figure": "training step", "repeats": args.repeats,
              "torchvision_like": args.torchvision_like, "weights": "random (seed 0)",
              "train": {}}
    for batch in [int(b) for b in args.batches.split(",")]:
        cmd = [sys.executable, os.path.abspath(__file__), "--preset", args.preset, "--size",
               args.size, "--repeats", args.repeats, "--child-batch", batch]
        cmd += ["--small"] * args.small + ["--torchvision-like"] * args.torchvision_like
        cmd += ["--square-canvas"] * args.square_canvas
        cmd += ["--layers", args.layers] if args.layers else []
        cmd += ["--precision", args.precision]
        cmd += ["--datasheet-tflops", args.datasheet_tflops] if args.datasheet_tflops else []
        try:
            child = _common.run_json(cmd)
        except RuntimeError as error:  # e.g. killed for memory at a large batch
            result["train"][f"b{batch}"] = {"batch": batch, "error": str(error)}
            continue
        result.update(preset=child["preset"], image_hw=child["image_hw"], canvas=child["canvas"])
        result["train"][f"b{batch}"] = child["case"]
        _common.log(f"b{batch}: {child['case']['median_s']} s/step, "
                    f"{child['case']['images_per_s']} img/s, "
                    f"peak {child['case']['peak_rss_mib']} MiB, cpu {child['case']['cpu']}")
    peaks = [c["peak_rss_mib"] for c in result["train"].values() if "peak_rss_mib" in c]
    result["peak_rss_mib"] = max(peaks) if peaks else None
    result["machine"] = _common.machine()
    _common.emit(result, args.json_out)


if __name__ == "__main__":
    main()
