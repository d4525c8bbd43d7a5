"""Frames per second of `mrcnn-kp predict` on a video, on this machine: prints one JSON line.

    python benchmarks/bench_video.py                          # 640 x 360, default + cpu_demo
    python benchmarks/bench_video.py --presets cpu_demo --frames 32
    python benchmarks/bench_video.py --small                  # tiny config, 4 frames (smoke)

A clip of synthetic walking people (mrcnn_kp.data.synthetic_video) is encoded to H.264 with
PyAV, then each preset runs the command's whole loop over it: decode -> batches through the
Predictor -> tracker -> drawing -> H.264 encode (commands/predict_video.process_video's steps).
`fps` is frames over the wall time of that loop, after one untimed warm-up batch (the first
call traces the graph; its time is `warmup_s`). Random weights: the speed does not depend on
what they detect, except through the number of detections (each is unmolded, its mask pasted
into the frame, tracked and written): `detections_per_frame` says how many. The parts besides
the model (decode, tracking and drawing on the clip's true people, encode) are timed alone as
ms per frame.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def make_clip(folder, frames, size):
    from mrcnn_kp.data.synthetic_video import Walker, moving_people_clip
    from mrcnn_kp.inference.video import VideoWriter

    width, height = size
    walkers = [Walker(start=(0.1 * width, 0.7 * height), velocity=(0.02 * width, 0),
                      height=0.5 * height),
               Walker(start=(0.9 * width, 0.72 * height), velocity=(-0.02 * width, 0),
                      height=0.48 * height),
               Walker(start=(0.5 * width, 0.6 * height), velocity=(0, 0.5),
                      height=0.3 * height)]
    images, truth = moving_people_clip(walkers, frames, size=size, seed=2)
    path = Path(folder) / "clip.mp4"
    began = time.perf_counter()
    with VideoWriter(path, fps=25.0) as writer:
        for image in images:
            writer.write(image)
    encode_ms = 1000 * (time.perf_counter() - began) / frames
    return path, images, truth, encode_ms


def parts_ms(path, images, truth):
    """ms per frame of decoding, tracking and drawing (the clip's true people)."""
    from mrcnn_kp.data.synthetic_video import truth_as_result
    from mrcnn_kp.inference.overlay import draw_frame
    from mrcnn_kp.inference.tracking import PoseTracker
    from mrcnn_kp.inference.video import open_video

    began = time.perf_counter()
    decoded = sum(1 for _ in open_video(path))
    decode = (time.perf_counter() - began) / decoded
    tracker, results = PoseTracker(), []
    began = time.perf_counter()
    for people in truth:
        results.append(tracker.update(truth_as_result(people)))
    track = (time.perf_counter() - began) / len(truth)
    began = time.perf_counter()
    for image, result in zip(images, results):
        draw_frame(image, result, keypoint_scores="probability")
    draw = (time.perf_counter() - began) / len(images)
    return {name: round(1000 * value, 2) for name, value in
            (("decode", decode), ("track", track), ("draw", draw))}


def preset_fps(name, path, out_dir):
    from mrcnn_kp.commands._shared import load_config_arg
    from mrcnn_kp.inference.overlay import draw_frame
    from mrcnn_kp.inference.predictor import load_predictor
    from mrcnn_kp.inference.tracking import PoseTracker, track_results
    from mrcnn_kp.inference.video import VideoWriter, open_video

    config = load_config_arg(name)
    cpu = _common.cpu_runtime(config.IMAGE_MAX_DIM)
    predictor, _ = load_predictor(config, None)
    first = next(iter(open_video(path, max_frames=1))).image
    began = time.perf_counter()
    predictor.detect([first] * config.BATCH_SIZE)
    warmup = time.perf_counter() - began
    reader = open_video(path)
    frames, detections, drawn = 0, 0, 0
    with _common.CpuMeter() as meter, VideoWriter(Path(out_dir) / f"{name}.mp4", 25.0) as w:
        pairs = predictor.predict_stream((f, f.image) for f in reader)
        for frame, result in track_results(pairs, PoseTracker()):
            w.write(draw_frame(frame.image, result))
            frames += 1
            detections += len(result["rois"])
            drawn += int((result["track_ids"] >= 0).sum())
    wall = meter.wall
    _common.log(f"{name}: {frames} frames in {wall:.1f} s")
    return {"fps": round(frames / wall, 3), "s_per_frame": round(wall / frames, 3),
            "frames": frames, "batch_size": config.BATCH_SIZE,
            "detections_per_frame": round(detections / frames, 1),
            "tracked_per_frame": round(drawn / frames, 1),
            "canvas": [config.IMAGE_MAX_DIM] * 2, "warmup_s": round(warmup, 2),
            "cpu": meter.report(), "runtime": cpu}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="default,cpu_demo")
    ap.add_argument("--size", default="640x360", help="WIDTHxHEIGHT of the clip")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--small", action="store_true", help="tiny preset, 4 frames at 160x90")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    if args.small:
        args.presets, args.size, args.frames = "tiny", "160x90", 4
    size = tuple(int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as folder:
        path, images, truth, encode_ms = make_clip(folder, args.frames, size)
        parts = dict(parts_ms(path, images, truth), encode=round(encode_ms, 2))
        presets = {name: preset_fps(name, path, folder) for name in args.presets.split(",")}
    result = {"benchmark": "video", "size": list(size), "frames": args.frames,
              "weights": "random", "presets": presets, "parts_ms_per_frame": parts,
              "machine": _common.machine()}
    _common.emit(result, args.json_out)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
