#!/usr/bin/env python
"""Inference latency against the number of persons through the keypoint head: one JSON line.

    python benchmarks/bench_model.py                          # ResNet-50, 800x1067, 1/10/50
    python benchmarks/bench_model.py --size 1024x1024 --preset cpu_demo
    python benchmarks/bench_model.py --no-mask --profile      # + per-stage times
    python benchmarks/bench_model.py --small                  # TinyConfig, seconds (tests)

Batch 1, random weights, a random image of --size molded into the canvas (800x1067 is padded
to 832x1088, or 1088x1088 with --square-canvas: see _common.SIZES). DETECTION_MIN_CONFIDENCE 0 and
DETECTION_MAX_INSTANCES = N force exactly N boxes through the keypoint (and mask) heads: the
graph has static shapes, so the heads always run on N slots. Each N is its own graph, built
and run in its own process (so its peak RSS is that of one model, as torchvision's benchmark
process; every process draws the same seeded weights, checked by a checksum; peak_rss_mib is
the largest). Timing: predict_on_batch (graph mode; --small calls the model eagerly), one
warm-up call (tracing) then --repeats calls, median. Each N also reports its forward GFLOP
(mrcnn_kp.model.flops: multiply-adds x 2 of the convs and dense layers), the GFLOP/s achieved
and their share of the matmul peak measured in the same process (`utilization`; with
--datasheet-tflops also `mfu`); gflop_by_part splits the last N.
--profile adds cumulative sub-graphs of the N = max model (trunk = backbone + FPN + RPN heads;
+ proposals; + box head and detection; full) and reports each stage as the difference.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def stage_models(model):
    """Cumulative sub-models of a debug inference model: {stage: keras.Model}."""
    import keras

    out = model.output  # dict (debug=True outputs)
    pyramid = [out[f"P{level}"] for level in range(2, 7)]
    cut = {
        "trunk": pyramid + [out["rpn_probs"], out["rpn_bbox"]],
        "proposals": [out["rpn_rois"], out["rpn_valid"]],
        "box_head_detection": [out["boxes"], out["scores"]],
    }
    return {name: keras.Model(model.inputs, tensors, name=f"upto_{name}")
            for name, tensors in cut.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="default", help="mrcnn_kp.config.PRESETS key")
    ap.add_argument("--size", default="800x1067", choices=sorted(_common.SIZES))
    ap.add_argument("--persons", help="boxes through the keypoint head (default 1,10,50; "
                    "--small: 1,4)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--torchvision-like", action="store_true",
                    help="torchvision's RPN width (256) and no mask head "
                         "(_common.TORCHVISION_ARCHITECTURE)")
    ap.add_argument("--precision", default="float32", choices=_common.PRECISIONS,
                    help="Keras dtype policy (mixed_bfloat16: bf16 convs on CPUs with "
                         "AVX512_BF16 / AMX)")
    ap.add_argument("--no-mask", action="store_true", help="USE_MASK_HEAD=False (torchvision "
                    "keypointrcnn has no mask head)")
    ap.add_argument("--profile", action="store_true", help="per-stage times at the largest N")
    ap.add_argument("--small", action="store_true", help="TinyConfig at 128 px, N = 1, 4")
    ap.add_argument("--square-canvas", action="store_true",
                    help="the square canvas of the long side (1088 x 1088 for 800x1067) instead "
                         "of the smallest one (832 x 1088)")
    ap.add_argument("--datasheet-tflops", type=float,
                    help="the device's peak TFLOP/s in the compute dtype (a GPU's datasheet "
                         "dense figure): adds mfu beside utilization (of the measured matmul "
                         "peak)")
    ap.add_argument("--child-persons", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--json-out")
    args = ap.parse_args()

    persons = [int(n) for n in (args.persons or ("1,4" if args.small else "1,10,50")).split(",")]
    if args.child_persons:
        _common.emit(one_count(args, args.child_persons, profile=args.profile))
        return
    result = {"figure": "inference latency vs persons", "torchvision_like": args.torchvision_like,
              "precision": args.precision, "batch": 1, "repeats": args.repeats,
              "weights": "random (seed 0)", "infer": {}}
    checksums = set()
    for n in persons:
        cmd = [sys.executable, os.path.abspath(__file__), "--preset", args.preset, "--size",
               args.size, "--repeats", args.repeats, "--child-persons", n,
               "--precision", args.precision]
        cmd += ["--small"] * args.small + ["--torchvision-like"] * args.torchvision_like
        cmd += ["--square-canvas"] * args.square_canvas + ["--no-mask"] * args.no_mask
        cmd += ["--profile"] * (args.profile and n == max(persons))
        cmd += ["--datasheet-tflops", args.datasheet_tflops] if args.datasheet_tflops else []
        child = _common.run_json(cmd)
        checksums.add(child.pop("weights_checksum"))
        result["infer"][f"persons_{n}"] = child.pop("case")
        result.update(child)  # the same preset, canvas, params in every child; the last profile
    if len(checksums) != 1:
        raise SystemExit(f"the children built different weights: {sorted(checksums)}")
    times = [result["infer"][f"persons_{n}"]["median_s"] for n in persons]
    result["flatness_max_over_min"] = round(times[-1] / times[0], 3)
    # each N ran in its own process (one model, as torchvision's benchmark): the largest peak
    result["peak_rss_mib"] = max(c["peak_rss_mib"] for c in result["infer"].values())
    result["machine"] = _common.machine()
    _common.emit(result, args.json_out)


def one_count(args, n, profile=False):
    """Build the model for N persons in this process, time it: {"case": ..., shared fields}."""
    preset, (height, width) = ("tiny", (96, 128)) if args.small else \
        (args.preset, _common.SIZES[args.size])
    canvas = _common.canvas_for(height, width, args.square_canvas)
    runtime = _common.cpu_runtime(max(canvas))
    import keras
    import numpy as np

    from mrcnn_kp.model.flops import count_flops
    from mrcnn_kp.model.keypoint_rcnn import build_inference_model

    overrides = dict(DETECTION_MIN_CONFIDENCE=0.0, IMAGES_PER_GPU=1, GPU_COUNT=1)
    overrides.update(_common.apply_precision(args.precision))
    if args.torchvision_like:
        overrides.update(_common.TORCHVISION_ARCHITECTURE)
    if args.no_mask:
        overrides["USE_MASK_HEAD"] = False
    proposals = _common.make_config(preset, canvas).POST_NMS_ROIS_INFERENCE
    config = _common.make_config(preset, canvas, DETECTION_MAX_INSTANCES=n,
                                 POST_NMS_ROIS_INFERENCE=max(n, proposals), **overrides)
    keras.utils.set_random_seed(0)  # every N's process draws the same weights
    model = build_inference_model(config, debug=profile)
    checksum = float(sum(np.abs(w).sum(dtype=np.float64) for w in model.get_weights()))
    image, meta = _common.molded_images(config, height, width, 1)
    inputs = {"input_image": image, "input_image_meta": meta}
    outputs = {}

    def call():
        if args.small:  # eager: no tracing, so the smoke test takes seconds
            outputs.update({k: keras.ops.convert_to_numpy(v)
                            for k, v in model(inputs, training=False).items()})
        else:
            outputs.update(model.predict_on_batch(inputs))

    case = _common.time_calls(call, args.repeats)
    case["peak_rss_mib"] = _common.rss_mib()  # before the matmul peak's own buffers
    case["device_peak_mib"] = _common.device_peak_mib()  # GPU (JAX) only, else None
    case["keypoint_head_boxes"] = int(outputs["keypoints"].shape[1])
    case["detections"] = int(np.asarray(outputs["num_detections"])[0])
    _common.log(f"N={n}: {case['median_s']} s ({case['detections']} detections), "
                f"cpu {case['cpu']}, peak {case['peak_rss_mib']} MiB")
    flops = count_flops(model)
    # model FLOP/s against this device's attainable matmul peak in the compute dtype
    peak = _common.matmul_peak_gflops(args.precision, size=256 if args.small else 4096)
    case.update(_common.flop_rate(flops["total"], case["median_s"], peak,
                                  args.datasheet_tflops), matmul_peak_gflop_per_s=peak)
    out = {"case": case, "weights_checksum": round(checksum, 3), "preset": preset,
           "image_hw": [height, width], "canvas": list(canvas),
           "mask_head": bool(config.USE_MASK_HEAD), "rpn_conv_channels": config.RPN_CONV_CHANNELS,
           "params_total": int(model.count_params()), "runtime": runtime,
           "matmul_peak_gflop_per_s": peak,
           "gflop_by_part": {part: round(f / 1e9, 2) for part, f in flops["by_part"].items()}}
    if profile:
        cumulative = {}
        for name, sub in stage_models(model).items():
            cumulative[name] = _common.time_calls(lambda: sub.predict_on_batch(inputs),
                                                  args.repeats)["median_s"]
        cumulative["full"] = case["median_s"]
        stages, previous = {}, 0.0
        for name, t in cumulative.items():
            stages[name if name != "full" else "keypoint_mask_heads_decode"] = round(
                t - previous, 4)
            previous = t
        out["profile"] = {"persons": n, "cumulative_s": cumulative, "stage_s": stages}
        _common.log("profile", out["profile"])
    return out


if __name__ == "__main__":
    main()
