"""`mrcnn-kp predict` on videos: files, folders of numbered frames and cameras, people tracked.

    mrcnn-kp predict clip.mp4 --weights torchvision-coco --output runs/
    mrcnn-kp predict frames/ --frames --fps 30 --weights last
    mrcnn-kp predict --camera 0 --weights last --max-frames 300

For each video, <stem>_pose.mp4 (the frames with masks, boxes labelled "#track score" and
skeletons of the people scoring at least --picture-min-score) and <stem>_pose.json: COCO
results records (image_id, category_id, bbox, score, segmentation, keypoints, as predict's
predictions.json) plus "frame" (the frame's index in the source), "time" (seconds) and
"track_id" (the person's id through the video; -1 for detections under --picture-min-score,
which are kept but not tracked). <stem>_frames.json lists the frames processed (image_id, frame,
time, width, height). A truncated or corrupt video, or Ctrl-C, ends that video: the frames read
before it are in both files, and the error is printed. Exit status 1 when any video could not be
read to its end (or nothing was processed), 0 otherwise.
"""
import json
import sys
import time
from pathlib import Path


def add_arguments(parser):
    group = parser.add_argument_group(
        "video", "video files (.mp4 .avi .mov .mkv .webm ...), --frames folders and --camera "
        "are read as videos: people are tracked and an annotated video is written")
    group.add_argument("--camera", default=None, metavar="N",
                       help="read camera N (Linux /dev/videoN, macOS AVFoundation index; "
                            "Windows: the DirectShow device name); stop with Ctrl-C or "
                            "--max-frames / --end")
    group.add_argument("--frames", action="store_true",
                       help="read each folder given as the numbered frames of one video")
    group.add_argument("--fps", type=float, default=None,
                       help="frame rate of --frames folders (default 25), or asked of --camera")
    group.add_argument("--every", type=int, default=1, metavar="N",
                       help="process every N-th frame (default 1: all)")
    group.add_argument("--start", type=float, default=None, metavar="SECONDS",
                       help="begin at this time in the video")
    group.add_argument("--end", type=float, default=None, metavar="SECONDS",
                       help="stop at this time in the video")
    group.add_argument("--max-frames", type=int, default=None, metavar="N",
                       help="stop after N processed frames")
    group.add_argument("--track-memory", type=int, default=10, metavar="N",
                       help="frames a person may go undetected and keep their id (default 10)")
    group.add_argument("--smooth", action="store_true",
                       help="smooth each tracked person's joints over time (One-Euro filter)")
    group.add_argument("--no-video", action="store_true",
                       help="write only the json files, no annotated video")


def wants_video(args):
    from mrcnn_kp.inference.video import is_video_file

    return (args.camera is not None or args.frames
            or any(is_video_file(name) for name in args.inputs))


class _Source:
    def __init__(self, name, stem, open_reader):
        self.name, self.stem, self.open = name, stem, open_reader


def collect_sources(args):
    """(sources, problems) for the video inputs of the command line."""
    from mrcnn_kp.inference import video

    options = dict(every=args.every, start=args.start, end=args.end, max_frames=args.max_frames)
    sources, problems, used = [], [], set()
    from mrcnn_kp.commands._shared import unique_stem

    for name in args.inputs:
        path = Path(name)
        if path.is_dir() and not args.frames:
            problems.append(f"{path}: a folder (give --frames to read it as the frames of "
                            f"a video)")
        elif path.is_dir() or (path.is_file() and video.is_video_file(path)):
            stem = unique_stem(path, used)
            sources.append(_Source(str(path), stem, lambda p=path: video.open_video(
                p, fps=args.fps, max_pixels=args.max_pixels, **options)))
        elif path.is_file():
            problems.append(f"{path}: not a video file ({', '.join(video.VIDEO_SUFFIXES)}); "
                            f"images and videos go to separate runs")
        else:
            problems.append(f"{path}: no such file or folder")
    if args.camera is not None:
        stem = unique_stem(Path(f"camera{args.camera}".replace("/", "_")), used)
        sources.append(_Source(f"camera {args.camera}", stem, lambda: video.open_camera(
            args.camera, fps=args.fps, every=args.every, end=args.end,
            max_frames=args.max_frames)))
    return sources, problems


def run(args):
    from mrcnn_kp.commands import _shared
    from mrcnn_kp.commands._shared import model_errors, report_error
    from mrcnn_kp.inference.video import VideoError, require_av

    try:
        require_av()
        if args.every < 1 or (args.max_frames is not None and args.max_frames < 1):
            raise VideoError("--every and --max-frames must be at least 1")
    except VideoError as exc:
        return report_error("predict", exc)
    sources, problems = collect_sources(args)
    for message in problems:
        print(f"skipped {message}", file=sys.stderr)
    if not sources:
        return report_error("predict", "no video to process")
    try:
        predictor, _, _ = _shared.load_model(args)
    except model_errors() as exc:
        return report_error("predict", exc)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    failed, processed = 0, 0
    for source in sources:
        try:
            reader = source.open()
        except VideoError as exc:
            print(f"mrcnn-kp predict: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        frames, people, error, interrupted = process_video(reader, predictor, out_dir,
                                                           source.stem, args)
        processed += frames
        if error:
            print(f"mrcnn-kp predict: error: {error}; the {frames} frame(s) read before it "
                  f"are in the outputs", file=sys.stderr)
            failed += 1
        outputs = f"{source.stem}_pose.json, {source.stem}_frames.json"
        if not args.no_video:
            outputs = f"{source.stem}_pose.mp4, " + outputs
        print(f"{source.name}: {frames} frame(s) processed, {people} people tracked; "
              f"results in {out_dir}/ ({outputs})")
        if interrupted:
            break
    return 1 if failed or not processed else 0


def process_video(reader, predictor, out_dir, stem, args):
    """Detect, track, draw and write one video -> (frames processed, distinct people
    tracked, error message or None, interrupted by Ctrl-C). The json files are written whatever
    happens."""
    import numpy as np
    from keras.utils import Progbar

    from mrcnn_kp.commands._shared import results_records
    from mrcnn_kp.inference.overlay import draw_frame
    from mrcnn_kp.inference.smoothing import OneEuroFilter
    from mrcnn_kp.inference.tracking import PoseTracker, track_results
    from mrcnn_kp.inference.video import VideoWriter
    from mrcnn_kp.utils import atomic_write_text

    tracker = PoseTracker(max_lost=args.track_memory, min_score=args.picture_min_score,
                          smoothing=OneEuroFilter if args.smooth else None)
    writer = None if args.no_video else VideoWriter(out_dir / f"{stem}_pose.mp4",
                                                   reader.output_fps)
    records, frames_table, people, error, interrupted = [], [], set(), None, False
    progbar = Progbar(reader.expected_frames(), unit_name="frame", stateful_metrics=["fps"])
    began, counted = None, 0  # the rate counts from the first batch's end (not its trace)
    file_name = Path(reader.name).name

    def frames():
        for frame in reader:
            yield frame, frame.image

    try:
        for frame, result in track_results(predictor.predict_stream(frames()), tracker):
            image_id = len(frames_table) + 1
            height, width = frame.image.shape[:2]
            frames_table.append({"id": image_id, "frame": frame.index,
                                 "time": round(frame.time, 4), "width": width, "height": height})
            kept = np.flatnonzero(np.asarray(result["class_ids"]).reshape(-1) > 0)
            for record, i in zip(results_records(result, image_id, file_name), kept):
                track_id = int(result["track_ids"][i])
                records.append({**record, "frame": frame.index, "time": round(frame.time, 4),
                                "track_id": track_id})
                if track_id >= 0:
                    people.add(track_id)
            if writer is not None:
                writer.write(draw_frame(frame.image, result, min_score=args.picture_min_score))
            if began is None:
                began, counted = time.monotonic(), len(frames_table)
            fps = (len(frames_table) - counted) / max(time.monotonic() - began, 1e-9)
            progbar.update(len(frames_table), [("fps", fps)])
    except KeyboardInterrupt:
        error, interrupted = f"{reader.name}: interrupted (Ctrl-C)", True
    finally:
        if writer is not None:
            writer.close()
        atomic_write_text(out_dir / f"{stem}_pose.json", json.dumps(records))
        atomic_write_text(out_dir / f"{stem}_frames.json", json.dumps(frames_table, indent=1))
    print()
    return len(frames_table), len(people), error or reader.error, interrupted
