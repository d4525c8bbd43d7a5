#!/usr/bin/env python
"""Time pyramid ROIAlign and NMS at detection sizes; one JSON line per Keras backend.

Default sizes (Mask R-CNN inference on a 1024 px image): batch 2, 1000 boxes per image pooled
from 4 FPN levels (P2 256 x 256 ... P5 32 x 32) with 256 channels to 7 x 7 (and 14 x 14 for
the mask / keypoint heads on 100 boxes), proposal NMS 6000 -> 1000 boxes per image at IoU 0.7,
and the detection layer's per-class NMS 1000 -> 100 at IoU 0.3. --small shrinks everything.

    python benchmarks/bench_ops.py                  # tensorflow and jax, one line each
    python benchmarks/bench_ops.py --backend jax --small

Each backend runs in its own subprocess (KERAS_BACKEND is fixed at import). The ops run the
way the model runs them: inside tf.function (graph mode, no XLA, like Keras on CPU) or
jax.jit, on inputs that are backend tensors already. Times are the median of --repeats calls
after one warm-up call, whose time is reported separately as *_first_call_s (tracing and
compilation). The machine's load average is recorded: compare runs only at similar load.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax")


def sizes(small):
    if small:
        return dict(image=256, batch=2, boxes=100, channels=32, mask_boxes=20, pre_nms=600,
                    post_nms=100, det_boxes=100, det_max=20)
    return dict(image=1024, batch=2, boxes=1000, channels=256, mask_boxes=100, pre_nms=6000,
                post_nms=1000, det_boxes=1000, det_max=100)


def random_boxes(rng, shape, image, min_side=8.0, max_side=None):
    import numpy as np

    max_side = max_side or image * 0.6
    side = np.exp(rng.uniform(np.log(min_side), np.log(max_side), shape + (1,)))  # all levels
    aspect = np.exp(rng.uniform(-0.7, 0.7, shape + (1,)))
    wh = np.concatenate([side * aspect, side / aspect], axis=-1)
    xy = rng.uniform(0, image, shape + (2,)) - wh / 2
    return np.concatenate([xy, xy + wh], axis=-1).astype(np.float32)


def timed(fn, args, repeats):
    import keras

    def once():
        start = time.perf_counter()
        keras.tree.map_structure(keras.ops.convert_to_numpy, fn(*args))
        return time.perf_counter() - start

    first = once()
    return first, statistics.median(once() for _ in range(repeats))


def compile_fn(fn):
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    import tensorflow as tf

    return tf.function(fn)


def run_child(small, repeats):
    import keras
    import numpy as np

    from mrcnn_kp.ops import boxes as box_ops
    from mrcnn_kp.ops.pyramid_roi_align import pyramid_roi_align_batched

    s = sizes(small)
    rng = np.random.default_rng(0)
    features = [rng.normal(size=(s["batch"], s["image"] // stride, s["image"] // stride,
                                 s["channels"])).astype(np.float32) for stride in (4, 8, 16, 32)]
    rois = random_boxes(rng, (s["batch"], s["boxes"]), s["image"])
    mask_rois = rois[:, :s["mask_boxes"]]
    proposals = random_boxes(rng, (s["batch"], s["pre_nms"]), s["image"])
    proposal_scores = rng.uniform(size=(s["batch"], s["pre_nms"])).astype(np.float32)
    det_boxes = random_boxes(rng, (s["det_boxes"],), s["image"])
    det_scores = rng.uniform(size=(s["det_boxes"],)).astype(np.float32)
    det_classes = rng.integers(1, 3, s["det_boxes"]).astype(np.int32)

    result = {"bench": "ops", "backend": keras.backend.backend(),
              "keras": keras.version(), "small": small, "repeats": repeats,
              "cpu_count": os.cpu_count(), "load_avg_1m_before": round(os.getloadavg()[0], 2)}
    result.update({k: v for k, v in s.items()})

    def record(name, fn, args):
        # inputs live on the backend already, as they do inside the model
        args = keras.tree.map_structure(keras.ops.convert_to_tensor, args)
        first, median = timed(compile_fn(fn), args, repeats)
        result[f"{name}_s"] = round(median, 4)
        result[f"{name}_first_call_s"] = round(first, 3)

    image = s["image"]
    record("roi_align_7x7", lambda f, b: pyramid_roi_align_batched(f, b, 7, image),
           (features, rois))
    record("roi_align_14x14_mask_boxes",
           lambda f, b: pyramid_roi_align_batched(f, b, 14, image),
           (features, mask_rois))
    post = s["post_nms"]
    record("nms_proposals", lambda b, sc: box_ops.nms_batched(b, sc, 0.7, post),
           (proposals, proposal_scores))
    det_max = s["det_max"]
    record("nms_detection_per_class",
           lambda b, sc, c: box_ops.nms_per_class(b, sc, c, 0.3, det_max),
           (det_boxes, det_scores, det_classes))
    if keras.backend.backend() == "tensorflow":  # the keras.ops versions behind the fast paths
        record("roi_align_7x7_keras_ops",
               lambda f, b: pyramid_roi_align_batched(f, b, 7, image, use_fast_path=False),
               (features, rois))
        record("nms_proposals_keras_ops",
               lambda b, sc: box_ops.nms_batched(b, sc, 0.7, post, use_fast_path=False),
               (proposals, proposal_scores))
    result["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=BACKENDS + ("all",), default="all")
    parser.add_argument("--small", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.small, args.repeats)
        return 0
    status = 0
    for name in BACKENDS if args.backend == "all" else (args.backend,):
        env = dict(os.environ, KERAS_BACKEND=name, TF_CPP_MIN_LOG_LEVEL="3")
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--repeats",
               str(args.repeats)] + (["--small"] if args.small else [])
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            print(json.dumps({"bench": "ops", "backend": name, "error": proc.stderr[-2000:]}))
            status = 1
        else:
            print(lines[-1], flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
