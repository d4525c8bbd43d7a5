"""A synthetic clip through the video pipeline; one annotated frame saved as a PNG.

    python samples/pose_video/pose_video.py --weights last --logs demo_output/logs \
        --png docs/images/video_frame.png          # a model trained by `mrcnn-kp demo`
    python samples/pose_video/pose_video.py --weights truth --png frame.png
                                                   # the clip's true poses, tracked and drawn

Three synthetic people (mrcnn_kp.data.synthetic_video) walk across a 640 x 360 background, two
of them crossing; the clip is encoded to H.264 (clip.mp4 in --out) and run through
`mrcnn-kp predict` (tracked json and annotated video in --out). --weights truth skips the model
and tracks the true poses instead. The frame --frame of the annotated video becomes --png.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def make_clip(path, frames):
    from mrcnn_kp.data.synthetic_video import Walker, moving_people_clip
    from mrcnn_kp.inference.video import VideoWriter

    walkers = [Walker(start=(90, 205), velocity=(14, 0), height=170),
               Walker(start=(560, 212), velocity=(-14, 0), height=165),
               Walker(start=(330, 160), velocity=(0.5, 0), height=105)]
    images, truth = moving_people_clip(walkers, frames, size=(640, 360), seed=2)
    with VideoWriter(path, fps=12.0) as writer:
        for image in images:
            writer.write(image)
    return images, truth


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="truth",
                    help="'truth' or any `mrcnn-kp predict --weights` value")
    ap.add_argument("--logs", default="logs")
    ap.add_argument("--config", default=None)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--frame", type=int, default=8, help="the frame saved as --png")
    ap.add_argument("--out", default="pose_video_output")
    ap.add_argument("--png", default=None)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, truth = make_clip(out / "clip.mp4", args.frames)
    if args.weights == "truth":
        from mrcnn_kp.data.synthetic_video import truth_as_result
        from mrcnn_kp.inference.overlay import draw_frame
        from mrcnn_kp.inference.tracking import PoseTracker

        tracker = PoseTracker()
        for t, people in enumerate(truth):
            result = tracker.update(truth_as_result(people))
            if t == args.frame:
                picture = draw_frame(images[t], result, keypoint_scores="probability")
    else:
        from mrcnn_kp import cli
        from mrcnn_kp.inference.video import open_video

        argv = ["predict", str(out / "clip.mp4"), "--weights", args.weights, "--logs",
                args.logs, "--output", str(out)]
        if args.config:
            argv += ["--config", args.config]
        if cli.main(argv) != 0:
            sys.exit("mrcnn-kp predict failed")
        frames = list(open_video(out / "clip_pose.mp4"))
        picture = frames[args.frame].image
        records = json.loads((out / "clip_pose.json").read_text())
        tracks = sorted({r["track_id"] for r in records if r["track_id"] >= 0})
        print(f"{len(records)} detections, track ids {tracks}")
    if args.png:
        Path(args.png).parent.mkdir(parents=True, exist_ok=True)
        # 256 colours: a docs-sized file
        Image.fromarray(np.asarray(picture)).quantize(256).save(args.png, optimize=True)
        print(f"frame {args.frame} -> {args.png}")


if __name__ == "__main__":
    main()
