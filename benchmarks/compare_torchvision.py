#!/usr/bin/env python
"""Ours next to torchvision's keypointrcnn_resnet50_fpn in ONE run, as ratios: one JSON line.

    # once: a python with torch and torchvision at $MRCNN_KP_TV_PYTHON (benchmarks/README.md)
    python benchmarks/compare_torchvision.py            # 800x1067, N = 1/10/50, batch 1, 2
    python benchmarks/compare_torchvision.py --size 1024x1024 --persons 1,50 --batches 1
    python benchmarks/compare_torchvision.py --small    # 96x128, seconds (tests)

The three parts run one after the other (never at the same time), each in its own process:
torchvision (through MRCNN_KP_TV_PYTHON, default /tmp/peers/tv/bin/python, reusing the
model, probes and train step of bench_torchvision.py in $MRCNN_KP_PEERS), then ours
(bench_model.py --torchvision-like, bench_train.py --torchvision-like). Like for like:
- same image size (torchvision pads 800x1067 to 800x1088; our static canvas is the smallest
  in multiples of 64, 832x1088, 4 % more pixels; --square-canvas: 1088x1088, 36 % more, the
  default config's square canvas), batch 1 inference, random weights on both sides;
- N boxes through the keypoint head: torchvision box_score_thresh 0 and
  detections_per_img N; ours DETECTION_MIN_CONFIDENCE 0 and DETECTION_MAX_INSTANCES N;
- the same network where the default (matterport) config costs more: no mask head on our
  side (torchvision's keypointrcnn has none) and the RPN's 3x3 conv 256 wide, not
  matterport's 512 (_common.TORCHVISION_ARCHITECTURE);
- train step: 512 RoIs per image in the box head, 32 positive RoIs per image in the keypoint
  head, conv1 + res2 frozen, frozen batch norm, SGD(1e-4, momentum 0.9, wd 1e-4).
ratios.* = ours / torchvision (below 1: ours is faster or smaller). flops.*: each side's
GFLOP per call (ours: mrcnn_kp.model.flops; torchvision: torch.utils.flop_counter, both 2 per
multiply-add), GFLOP/s, and utilization = GFLOP/s over the matmul peak each side measures in
its own process (bench_model/bench_train's matmul_peak_gflop_per_s; torch.matmul).
targets / targets_met: the ratios the JSON compares against (TARGETS: inference <= 0.6,
train step <= 0.8, peak memory <= 1).
"""
import argparse
import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402  (numpy and the standard library: the torchvision venv has both)

TARGETS = {"infer": 0.6, "train": 0.8, "peak_rss": 1.0}


def torchvision_child(args, height, width, persons, batches):
    """Runs under the torchvision venv: inference per N, then train steps per batch size."""
    sys.path.insert(0, args.peers)
    import bench_torchvision as tvb
    import torch
    import torchvision

    torch.set_num_threads(args.threads)
    model = tvb.build_model("coco")
    probe = tvb.Probe(model)
    tvb.control_positives(model, 32)
    init_state = copy.deepcopy(model.state_dict())
    result = {"peer": "torchvision keypointrcnn_resnet50_fpn (coco structure, random weights)",
              "torch": torch.__version__, "torchvision": torchvision.__version__,
              "threads": torch.get_num_threads(), "infer": {}, "train": {}}
    for n in persons:
        model.roi_heads.detections_per_img = n
        case = tvb.bench_infer(model, probe, height, width, 0.0, args.repeats, 1)
        result["infer"][f"persons_{n}"] = case
        tvb.log(f"infer N={n}: {case['median_s']} s, kp rois {case['kp_head_rois']}")
    result["peak_rss_after_infer_mib"] = tvb.rss_mib()
    for batch in batches:
        case = tvb.bench_train(model, probe, batch, args.repeats, 1, height, width, init_state)
        case["images_per_s"] = round(batch / case["median_s"], 3)
        result["train"][f"b{batch}"] = case
        tvb.log(f"train b{batch}: {case['median_s']} s")
    result["peak_rss_mib"] = tvb.rss_mib()
    # FLOPs (torch.utils.flop_counter: the same 2 per multiply-add as mrcnn_kp.model.flops),
    # counted on extra calls after the timed ones, and the attainable matmul peak
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    model.roi_heads.score_thresh = 0.0  # as bench_infer ran it
    for n in persons:
        model.roi_heads.detections_per_img = n
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model([tvb.make_image(height, width, seed=1)])  # bench_infer's image
        result["infer"][f"persons_{n}"]["flops"] = counter.get_total_flops()
    for batch in batches:
        with FlopCounterMode(display=False) as counter:  # forward + backward of one step
            tvb.bench_train(model, probe, batch, 1, 0, height, width, init_state)
        result["train"][f"b{batch}"]["flops"] = counter.get_total_flops()
    from torchvision_side import matmul_peak_gflops

    result["matmul_peak_gflop_per_s"] = matmul_peak_gflops(
        torch, torch.device("cpu"), "float32", 256 if args.small else 4096)
    for case in list(result["infer"].values()) + list(result["train"].values()):
        case.update(_common.flop_rate(case.pop("flops"), case["median_s"],
                                      result["matmul_peak_gflop_per_s"]))
    return result


def ratio(ours, theirs):
    return None if not ours or not theirs else round(ours / theirs, 3)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="800x1067", choices=["800x1067", "1024x1024"])
    ap.add_argument("--persons", default="1,10,50")
    ap.add_argument("--batches", default="1,2")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    ap.add_argument("--small", action="store_true", help="96x128, TinyConfig on our side, N=1, "
                    "batch 1: checks the plumbing in seconds")
    ap.add_argument("--skip-torchvision", action="store_true",
                    help="ours only (ratios null): checks our side's plumbing")
    ap.add_argument("--square-canvas", action="store_true",
                    help="ours on the square canvas of the long side (1088 x 1088) instead of "
                         "the smallest (832 x 1088)")
    ap.add_argument("--precision", default="float32",
                    choices=_common.PRECISIONS,
                    help="our side's Keras dtype policy (torchvision runs float32)")
    ap.add_argument("--ours-infer-json", help="reuse a bench_model.py line instead of running it")
    ap.add_argument("--ours-train-json", help="reuse a bench_train.py line instead of running it")
    ap.add_argument("--tv-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--peers", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json-out")
    args = ap.parse_args()

    if args.small:
        height, width, persons, batches = 96, 128, [1], [1]
    else:
        height, width = (int(v) for v in args.size.split("x"))
        persons = [int(n) for n in args.persons.split(",")]
        batches = [int(b) for b in args.batches.split(",")]
    if args.tv_child:  # inside the torchvision venv: no mrcnn_kp, no keras
        import json

        print(json.dumps(torchvision_child(args, height, width, persons, batches)), flush=True)
        return

    import json
    from pathlib import Path

    here = Path(__file__).resolve().parent
    result = {"figure": "ours vs torchvision", "image_hw": [height, width],
              "ours_precision": args.precision,
              "small": args.small, "repeats": args.repeats, "targets": TARGETS,
              "load_before": {}}
    # torchvision first (when its venv exists)
    result["load_before"]["torchvision"] = [round(x, 2) for x in os.getloadavg()]
    if args.skip_torchvision:
        result["torchvision"] = {"error": "skipped (--skip-torchvision)"}
    elif _common.TORCHVISION_PYTHON.exists():
        cmd = [_common.TORCHVISION_PYTHON, here / "compare_torchvision.py", "--tv-child",
               "--peers", _common.PEERS, "--repeats", args.repeats, "--threads", args.threads,
               "--size", args.size, "--persons", ",".join(map(str, persons)),
               "--batches", ",".join(map(str, batches))] + ["--small"] * args.small
        try:
            result["torchvision"] = _common.run_json(cmd)
        except RuntimeError as error:
            result["torchvision"] = {"error": str(error)}
    else:
        result["torchvision"] = {"error": f"no torchvision venv at {_common.TORCHVISION_PYTHON}:"
                                          f" set MRCNN_KP_TV_PYTHON to a python with torch and torchvision"}
    # ours: inference (no mask head), then training (torchvision's RoI counts)
    common = ["--repeats", args.repeats] + (["--small"] if args.small else ["--size", args.size])
    common += ["--square-canvas"] * args.square_canvas + ["--precision", args.precision]
    result["load_before"]["ours_infer"] = [round(x, 2) for x in os.getloadavg()]
    if args.ours_infer_json:
        result["ours_infer"] = json.loads(Path(args.ours_infer_json).read_text())
    else:
        result["ours_infer"] = _common.run_json(
            [sys.executable, here / "bench_model.py", "--torchvision-like", "--persons",
             ",".join(map(str, persons))] + common)
    result["load_before"]["ours_train"] = [round(x, 2) for x in os.getloadavg()]
    if args.ours_train_json:
        result["ours_train"] = json.loads(Path(args.ours_train_json).read_text())
    else:
        result["ours_train"] = _common.run_json(
            [sys.executable, here / "bench_train.py", "--torchvision-like", "--batches",
             ",".join(map(str, batches))] + common)

    tv = result["torchvision"]
    ours_infer, ours_train = result["ours_infer"], result["ours_train"]
    ratios = {"infer": {}, "train": {}}
    for n in persons:
        key = f"persons_{n}"
        ratios["infer"][key] = ratio(ours_infer["infer"].get(key, {}).get("median_s"),
                                     tv.get("infer", {}).get(key, {}).get("median_s"))
    for b in batches:
        key = f"b{b}"
        ratios["train"][key] = ratio(ours_train["train"].get(key, {}).get("median_s"),
                                     tv.get("train", {}).get(key, {}).get("median_s"))
    ratios["peak_rss_infer"] = ratio(ours_infer.get("peak_rss_mib"),
                                     tv.get("peak_rss_after_infer_mib"))
    ratios["peak_rss_train"] = ratio(ours_train.get("peak_rss_mib"), tv.get("peak_rss_mib"))
    # each side's arithmetic (GFLOP, 2 per multiply-add) and the share of its own process'
    # matmul peak it ran at: where a time ratio comes from (less work or faster work)
    result["flops"] = {}
    cases = (("infer", ours_infer["infer"], [f"persons_{n}" for n in persons]),
             ("train", ours_train["train"], [f"b{b}" for b in batches]))
    for part, ours_cases, keys in cases:
        for key in keys:
            mine, theirs = ours_cases.get(key, {}), tv.get(part, {}).get(key, {})
            result["flops"][f"{part}_{key}"] = {
                field: {"ours": mine.get(field), "torchvision": theirs.get(field)}
                for field in ("gflop", "gflop_per_s", "utilization")}
    result["ratios"] = ratios
    if "infer" in tv:
        tv_times = [tv["infer"][f"persons_{n}"]["median_s"] for n in persons]
        result["flatness_max_over_min"] = {"ours": ours_infer.get("flatness_max_over_min"),
                                           "torchvision": round(tv_times[-1] / tv_times[0], 3)}
    values = [v for part in ("infer", "train") for v in ratios[part].values()]
    result["targets_met"] = None if None in values else {
        "infer": all(v <= TARGETS["infer"] for v in ratios["infer"].values()),
        "train": all(v <= TARGETS["train"] for v in ratios["train"].values()),
        "peak_rss": all(ratios[k] is not None and ratios[k] <= TARGETS["peak_rss"]
                        for k in ("peak_rss_infer", "peak_rss_train")),
    }
    result["machine"] = _common.machine()
    _common.emit(result, args.json_out)


if __name__ == "__main__":
    main()
