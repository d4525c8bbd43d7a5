"""Shared helpers of the benchmark scripts: timing, CPU accounting, peak memory, inputs.

Every script prints ONE JSON line on stdout (progress on stderr). Timings are the median of
`repeats` calls after `warmup` untimed calls (the first call traces and compiles the graph;
its time is reported separately as `warmup_s`). `cpu.foreign_frac` is the share of the whole
machine's CPU that OTHER processes used meanwhile: above ~0.05 the timings are inflated.
"""
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PEERS = Path(os.environ.get("MRCNN_KP_PEERS", ROOT.parent / "shared" / "peers"))
TORCHVISION_PYTHON = Path(os.environ.get("MRCNN_KP_TV_PYTHON", "/tmp/peers/tv/bin/python"))

# Benchmark input sizes (height, width). Our canvas is static, in multiples of 64: by default
# the smallest that holds the image unscaled (canvas_for: 800 x 1067 -> 832 x 1088, 4 % more
# pixels than torchvision's 800 x 1088 batch padding); --square-canvas gives the square of the
# long side (1088 x 1088, 36 % more), the default config's square canvas.
SIZES = {"800x1067": (800, 1067), "1024x1024": (1024, 1024)}


def canvas_for(height, width, square=False):
    """(canvas height, canvas width): multiples of 64 holding height x width unscaled."""
    def up(v):
        return -(-int(v) // 64) * 64

    if square:
        return (up(max(height, width)),) * 2
    return up(height), up(width)


# torchvision's keypointrcnn_resnet50_fpn where the default (matterport) config differs in
# cost: its RPN head's 3x3 conv is as wide as the FPN (256; matterport's is 512, +67 GFLOP
# at 832 x 1088), and it has no mask head.
TORCHVISION_ARCHITECTURE = dict(RPN_CONV_CHANNELS=256, USE_MASK_HEAD=False)
# ... and its training setup (torchvision_side.py): 512 RoIs per image in
# the box head, 32 positive RoIs per image in the keypoint head.
TORCHVISION_LIKE = dict(TORCHVISION_ARCHITECTURE, TRAIN_ROIS_PER_IMAGE=512,
                        ROI_POSITIVE_RATIO=0.25, KEYPOINT_ROIS_PER_IMAGE=32)


def cpu_runtime(canvas):
    """Apply the package's CPU runtime settings as the `mrcnn-kp` commands do for a model of
    this canvas (TF threads: mrcnn_kp.runtime.tune_cpu_threads; MRCNN_KP_TF_THREADS=default
    keeps TensorFlow's, "intra,inter" forces) and say what runs:
    {"tf_threads": [intra, inter] or "default", "bfc_allocator": ...}."""
    import mrcnn_kp  # noqa: F401  (sets TF_CPU_ALLOCATOR_USE_BFC unless the caller did)
    from mrcnn_kp.runtime import tune_cpu_threads

    threads = tune_cpu_threads(canvas=canvas)
    return {"tf_threads": list(threads) if threads else "default",
            "bfc_allocator": os.environ.get("TF_CPU_ALLOCATOR_USE_BFC", "")}


def device_peak_mib():
    """Peak memory handed out by the accelerator's allocator (JAX on a GPU), MiB; None on the
    CPU, where the process' peak RSS (rss_mib) is the figure."""
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax

    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    peak = (stats or {}).get("peak_bytes_in_use")
    return None if peak is None else round(peak / 2 ** 20, 1)


def log(*args):
    print(f"[{Path(sys.argv[0]).stem}]", *args, file=sys.stderr, flush=True)


def rss_mib():
    """Peak resident memory of this process so far, MiB (Linux ru_maxrss is in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine():
    """Where a figure came from: CPU, cores, load average, library versions."""
    import keras

    info = {"cpu": cpu_model(), "nproc": os.cpu_count(),
            "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "keras": keras.__version__,
            "backend": keras.backend.backend()}
    if info["backend"] == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
    else:
        import jax

        info["jax"] = jax.__version__
    return info


class CpuMeter:
    """CPU use over a code section: self_util (cores this process kept busy) and foreign_frac
    (share of the machine's CPU capacity used by other processes meanwhile, from /proc/stat)."""

    @staticmethod
    def _machine():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:9]]
            return sum(v), v[3] + v[4]  # total, idle + iowait (jiffies)
        except OSError:
            return None

    @staticmethod
    def _self():
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def __enter__(self):
        self.m0, self.s0, self.w0 = self._machine(), self._self(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w0
        self.self_cpu = self._self() - self.s0
        m1 = self._machine()
        self.foreign = None
        if self.m0 and m1:
            hz = os.sysconf("SC_CLK_TCK")
            total = (m1[0] - self.m0[0]) / hz
            busy = total - (m1[1] - self.m0[1]) / hz
            if total > 0:
                self.foreign = max(0.0, (busy - self.self_cpu) / total)
        return False

    def report(self):
        return {"self_util": round(self.self_cpu / self.wall, 2) if self.wall else None,
                "foreign_frac": None if self.foreign is None else round(self.foreign, 3)}


def time_calls(fn, repeats, warmup=1):
    """{median_s, all_s, warmup_s, cpu} of fn() called warmup + repeats times."""
    warm, times = [], []
    for _ in range(warmup):
        start = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - start)
    with CpuMeter() as cpu:
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(times), 4), "all_s": [round(t, 4) for t in times],
            "warmup_s": [round(t, 3) for t in warm], "cpu": cpu.report()}


PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
COMPUTE_DTYPES = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


def matmul_peak_gflops(precision="float32", size=4096, repeats=5):
    """Best GFLOP/s of a size^3 matrix product in the compute dtype of `precision`, on the
    Keras backend's default device with this process' thread settings: the attainable
    peak that a model's FLOP/s is measured against (a vendor's datasheet peak is higher)."""
    import keras

    dtype = COMPUTE_DTYPES[precision]
    a = keras.ops.convert_to_tensor(
        np.random.default_rng(0).standard_normal((size, size)).astype(np.float32), dtype=dtype)
    b = keras.ops.convert_to_tensor(
        np.random.default_rng(1).standard_normal((size, size)).astype(np.float32), dtype=dtype)
    best = float("inf")
    for i in range(repeats + 1):  # the first call warms up (JAX compiles)
        start = time.perf_counter()
        keras.ops.convert_to_numpy(keras.ops.matmul(a, b)[:1, :1])  # waits for the device
        if i:
            best = min(best, time.perf_counter() - start)
    return round(2 * size ** 3 / best / 1e9, 1)


def flop_rate(flops, seconds, peak_gflops=None, datasheet_tflops=None):
    """{gflop, gflop_per_s, utilization (of the measured matmul peak), mfu (of a datasheet
    peak, when given)} of `flops` done in `seconds`."""
    rate = flops / seconds / 1e9
    out = {"gflop": round(flops / 1e9, 3), "gflop_per_s": round(rate, 2)}
    if peak_gflops:
        out["utilization"] = round(rate / peak_gflops, 4)
    if datasheet_tflops:
        out["mfu"] = round(rate / (datasheet_tflops * 1e3), 4)
    return out


def apply_precision(name):
    """Set Keras' global dtype policy (before the model is built); the config override that
    records it: {} for float32, else {"MIXED_PRECISION": name}."""
    import keras

    if name not in PRECISIONS:
        raise SystemExit(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    keras.mixed_precision.set_global_policy(name)
    return {} if name == "float32" else {"MIXED_PRECISION": name}


def make_config(preset, canvas=None, **overrides):
    """A preset of mrcnn_kp.config.PRESETS with the canvas (a side, or (height, width): a
    non-square IMAGE_CANVAS_SHAPE) and overrides applied."""
    from mrcnn_kp.config import PRESETS

    cls = PRESETS[preset]
    if canvas is not None:
        height, width = (canvas, canvas) if isinstance(canvas, int) else canvas
        overrides.setdefault("IMAGE_MAX_DIM", max(height, width))
        overrides.setdefault("IMAGE_MIN_DIM", min(cls.IMAGE_MIN_DIM, height, width))
        if height != width:
            overrides.setdefault("IMAGE_CANVAS_SHAPE", (height, width))
    return cls(**overrides)


def molded_images(config, height, width, batch, seed=1):
    """input_image [B, CH, CW, 3] float32 (a random height x width image placed in the canvas
    the way the predictor molds it) and input_image_meta [B, 12 + C]."""
    from mrcnn_kp.data.transforms import resize_image
    from mrcnn_kp.image_meta import compose_image_meta

    rng = np.random.default_rng(seed)
    images, metas = [], []
    for b in range(batch):
        raw = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        molded, window, scale, _ = resize_image(raw, config)
        images.append(molded.astype(np.float32))
        metas.append(compose_image_meta(b, raw.shape, molded.shape, window, scale,
                                        np.ones(config.NUM_CLASSES, np.int32)))
    return np.stack(images), np.stack(metas)  # [B, CH, CW, 3], [B, 12 + C]


# torchvision's benchmark persons, as fractions of the image (x1, y1, x2, y2).
PERSON_BOXES = np.array([[0.09, 0.19, 0.28, 0.88], [0.37, 0.12, 0.56, 0.94],
                         [0.66, 0.25, 0.89, 0.98]], np.float32)


def training_batch(config, height, width, seed=10):
    """The training model's batch dict (docs/DESIGN.md): BATCH_SIZE random images of
    height x width molded into the canvas, each with torchvision's 3 persons (17 joints,
    ~20 % unlabeled) and box-shaped mini masks."""
    from mrcnn_kp.data.targets import rpn_targets_for_config

    rng = np.random.default_rng(seed)
    images, metas = molded_images(config, height, width, config.BATCH_SIZE, seed)
    g, k = config.MAX_GT_INSTANCES, config.NUM_KEYPOINTS
    mask_shape = tuple(config.MINI_MASK_SHAPE) if config.USE_MINI_MASK \
        else tuple(config.IMAGE_SHAPE[:2])
    m_h, m_w = mask_shape
    columns = {key: [] for key in ("input_rpn_match", "input_rpn_bbox", "input_gt_class_ids",
                                   "input_gt_boxes", "input_gt_masks", "input_gt_keypoints")}
    for b in range(config.BATCH_SIZE):
        window, scale = metas[b, 7:11], metas[b, 11]  # (y1, x1, y2, x2), float
        ids = np.zeros(g, np.int32)
        boxes = np.zeros((g, 4), np.float32)
        keypoints = np.zeros((g, k, 3), np.float32)
        masks = np.zeros((g,) + mask_shape, np.float32)
        n = min(len(PERSON_BOXES), g)
        boxes[:n] = PERSON_BOXES[:n] * np.array([width, height, width, height]) * scale
        boxes[:n] += np.array([window[1], window[0], window[1], window[0]])
        ids[:n] = 1
        for i in range(n):
            x1, y1, x2, y2 = boxes[i]
            keypoints[i, :, 0] = rng.uniform(x1, x2, k)
            keypoints[i, :, 1] = rng.uniform(y1, y2, k)
            keypoints[i, :, 2] = np.where(rng.uniform(size=k) < 0.2, 0, 2)
            masks[i, m_h // 8: 7 * m_h // 8, m_w // 4: 3 * m_w // 4] = 1.0
        rpn_match, rpn_bbox = rpn_targets_for_config(ids, boxes, config, rng)
        for key, value in zip(columns, (rpn_match, rpn_bbox, ids, boxes, masks, keypoints)):
            columns[key].append(value)
    batch = {key: np.stack(values) for key, values in columns.items()}
    batch.update(input_image=images, input_image_meta=metas)
    return batch


def run_json(cmd, timeout=None, env=None):
    """Run a benchmark subprocess and return the JSON object of its last stdout line."""
    log("run:", " ".join(str(c) for c in cmd))
    proc = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, text=True,
                          timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} exited with {proc.returncode}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{cmd} printed no JSON line")
    return json.loads(lines[-1])


def emit(result, json_out=None):
    result["date_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    line = json.dumps(result)
    print(line, flush=True)
    if json_out:
        Path(json_out).write_text(line + "\n")
