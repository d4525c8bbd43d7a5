"""Video in and out with PyAV: frames from files, numbered-frame folders and cameras.

    reader = open_video("clip.mp4", every=2, start=1.0, end=5.0, max_frames=100)
    for frame in reader:                 # Frame(index, time, image uint8 RGB [H, W, 3])
        ...
    if reader.error:                     # truncated / corrupt input: what came before is kept
        print(reader.error)

    with VideoWriter("out.mp4", fps=25.0) as writer:
        writer.write(image)              # uint8 RGB [H, W, 3]; the size is fixed by frame 1

PyAV (`pip install mrcnn_kp[video]`, i.e. `av`) wraps FFmpeg's libraries and its wheels carry
them, codecs included (H.264 through libx264, VP8/VP9, MPEG-4, MJPEG), so nothing else has to
be installed, and frames arrive as numpy arrays without a subprocess or a pipe.

A reader never raises once it is open: a decoding error, or a stream that stops before the
duration its container announces, ends the iteration and leaves the message in `reader.error`,
so the frames read before it are kept by the caller. Opening a file that is not a video raises
VideoError. Written .mp4 files are fragmented (a fragment per key frame, one a second), so a
run that is killed leaves a playable video of what it wrote.
"""
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".ts",
                  ".wmv", ".flv", ".gif")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
DEFAULT_FOLDER_FPS = 25.0
# A stream that ends more than this many frame periods before the announced duration is reported
# as truncated.
TRUNCATION_SLACK_FRAMES = 2.5


class VideoError(ValueError):
    """A video that cannot be opened or written; the message says why."""


def require_av():
    """The `av` module, or VideoError saying how to install it."""
    try:
        import av
    except ImportError as exc:
        raise VideoError("video input and output need PyAV: pip install 'mrcnn_kp[video]' "
                         "(or pip install av)") from exc
    return av


def is_video_file(path):
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass
class Frame:
    """One decoded frame: index in the source (0-based), time in seconds, uint8 RGB image."""

    index: int
    time: float
    image: np.ndarray  # [H, W, 3] uint8


class _Selection:
    """--every / --start / --end / --max-frames applied to a stream of (index, time) frames."""

    def __init__(self, every=1, start=None, end=None, max_frames=None):
        if every < 1:
            raise VideoError(f"--every must be at least 1, got {every}")
        if max_frames is not None and max_frames < 1:
            raise VideoError(f"--max-frames must be at least 1, got {max_frames}")
        if start is not None and end is not None and end <= start:
            raise VideoError(f"--end ({end}) must be after --start ({start})")
        self.every, self.start, self.end, self.max_frames = every, start or 0.0, end, max_frames
        self.seen = 0  # frames at or after start
        self.kept = 0

    def done(self):
        return self.max_frames is not None and self.kept >= self.max_frames

    def take(self, time, period):
        """(keep this frame, stop now)."""
        if time < self.start - period / 2:
            return False, False
        if self.end is not None and time >= self.end - period / 2:
            return False, True
        keep = self.seen % self.every == 0
        self.seen += 1
        if keep:
            self.kept += 1
        return keep, False


class VideoReader:
    """Frames of a video file or a camera (anything FFmpeg opens), selected as _Selection."""

    def __init__(self, source, every=1, start=None, end=None, max_frames=None, format=None,
                 options=None, name=None):
        av = require_av()
        self.name = name or str(source)
        self.selection = _Selection(every, start, end, max_frames)
        self.error = None
        try:
            self.container = av.open(str(source), format=format, options=options or {})
        except (av.error.FFmpegError, OSError, ValueError) as exc:  # ValueError: no such format
            what = f"cannot open {source}" if format else "not a readable video"
            raise VideoError(f"{self.name}: {what} ({exc})") from exc
        if not self.container.streams.video:
            self.container.close()
            raise VideoError(f"{self.name}: no video stream in the file")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate else DEFAULT_FOLDER_FPS
        self.width, self.height = self.stream.width, self.stream.height
        duration = self.container.duration  # microseconds, None for cameras and some files
        self.duration = duration / 1e6 if duration else None
        # times count from the stream's first frame (H.264 with B-frames often starts later)
        base = self.stream.start_time
        self.time_base = float(self.stream.time_base)
        self.start_pts = int(base) if base is not None else 0
        self.frames_read = 0

    @property
    def output_fps(self):
        return self.fps / self.selection.every

    def expected_frames(self):
        """How many frames the selection should give, when the duration is known (else None)."""
        if self.duration is None:
            return self.selection.max_frames
        end = min(self.selection.end or self.duration, self.duration)
        count = max(int(round((end - self.selection.start) * self.fps)), 0)
        count = -(-count // self.selection.every)
        if self.selection.max_frames is not None:
            count = min(count, self.selection.max_frames)
        return count

    def __iter__(self):
        av = require_av()
        period = 1.0 / self.fps
        selection = self.selection
        last_time, stopped = None, False
        try:
            if selection.start > 0:
                offset = self.start_pts + int(selection.start / self.time_base)
                self.container.seek(offset, stream=self.stream, backward=True)
            for position, decoded in enumerate(self.container.decode(self.stream)):
                pts = decoded.pts
                time = ((pts - self.start_pts) * self.time_base if pts is not None
                        else position * period)
                last_time = time
                keep, stopped = selection.take(time, period)
                if stopped:
                    break
                if keep:
                    self.frames_read += 1
                    yield Frame(int(round(time * self.fps)), time,
                                decoded.to_ndarray(format="rgb24"))
                    if selection.done():
                        stopped = True
                        break
        except (av.error.FFmpegError, OSError) as exc:
            at = "" if last_time is None else f" at {last_time:.2f} s"
            self.error = (f"{self.name}: decoding failed after {self.frames_read} frame(s)"
                          f"{at} ({exc}); the file is truncated or corrupt")
        finally:
            self.container.close()
        if self.error is None and not stopped:
            self._check_complete(last_time, period)

    def _check_complete(self, last_time, period):
        """A stream that stops well before its announced duration (or its --end) is truncated."""
        if self.duration is None:
            return
        wanted = min(self.selection.end or self.duration, self.duration)
        reached = -period if last_time is None else last_time
        if reached + period < wanted - TRUNCATION_SLACK_FRAMES * period:
            self.error = (f"{self.name}: the video stops at {max(reached, 0.0):.2f} s of "
                          f"{wanted:.2f} s after {self.frames_read} frame(s); the file is "
                          f"truncated or corrupt")


def frame_number(path):
    """Sort key for numbered frames: the numbers in the name compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", Path(path).name)]


class FrameFolderReader:
    """The images of a folder as the frames of one video, in number order, at `fps`."""

    def __init__(self, folder, fps=DEFAULT_FOLDER_FPS, every=1, start=None, end=None,
                 max_frames=None, max_pixels=None):
        folder = Path(folder)
        self.name = str(folder)
        self.files = sorted((p for p in folder.iterdir()
                             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                             and not p.name.startswith(".")), key=frame_number)
        if not self.files:
            raise VideoError(f"{folder}: no image files to read as frames")
        self.fps = float(fps)
        self.selection = _Selection(every, start, end, max_frames)
        self.max_pixels = max_pixels
        self.error = None
        self.skipped = []
        self.frames_read = 0
        self.duration = len(self.files) / self.fps

    output_fps = VideoReader.output_fps

    def expected_frames(self):
        return VideoReader.expected_frames(self)

    def __iter__(self):
        from mrcnn_kp.inference.predictor import DEFAULT_MAX_PIXELS, ImageReadError, read_image

        period = 1.0 / self.fps
        for index, path in enumerate(self.files):
            keep, stop = self.selection.take(index * period, period)
            if stop:
                break
            if not keep:
                continue
            try:
                image = read_image(path, max_pixels=self.max_pixels or DEFAULT_MAX_PIXELS)
            except ImageReadError as exc:
                self.skipped.append(str(exc))
                print(f"\nskipped frame {exc}", file=sys.stderr)
                continue
            self.frames_read += 1
            yield Frame(index, index * period, image)
            if self.selection.done():
                break


def camera_source(camera, platform=None):
    """(FFmpeg source, input format) of a camera: an index N or a device name.

    Linux: /dev/videoN through v4l2; macOS: AVFoundation device N; Windows: DirectShow, which
    names devices ("video=Integrated Camera"), so there a name must be given.
    """
    platform = platform or sys.platform
    camera = str(camera)
    if platform.startswith("linux"):
        return (f"/dev/video{camera}" if camera.isdigit() else camera), "v4l2"
    if platform == "darwin":
        return camera, "avfoundation"
    if platform.startswith("win"):
        if camera.isdigit():
            raise VideoError("--camera on Windows takes the DirectShow device name, e.g. "
                             "--camera 'Integrated Camera' (list them with: ffmpeg -list_devices "
                             "true -f dshow -i dummy)")
        return (camera if camera.startswith("video=") else f"video={camera}"), "dshow"
    raise VideoError(f"--camera is not supported on {platform}")


def open_camera(camera, fps=None, every=1, max_frames=None, end=None):
    source, input_format = camera_source(camera)
    options = {"framerate": str(int(fps))} if fps else {}
    return VideoReader(source, every=every, end=end, max_frames=max_frames, format=input_format,
                       options=options, name=f"camera {camera}")


def open_video(source, every=1, start=None, end=None, max_frames=None, fps=None,
               max_pixels=None):
    """A reader for a video file or a folder of numbered frames (fps: the folder's rate)."""
    path = Path(source)
    if path.is_dir():
        return FrameFolderReader(path, fps=fps or DEFAULT_FOLDER_FPS, every=every, start=start,
                                 end=end, max_frames=max_frames, max_pixels=max_pixels)
    if not path.is_file():
        raise VideoError(f"{path}: no such file or folder")
    return VideoReader(path, every=every, start=start, end=end, max_frames=max_frames)


class VideoWriter:
    """Writes uint8 RGB frames to a video file: H.264 (yuv420p) in .mp4/.mov/.mkv, VP9 in
    .webm, MPEG-4 part 2 in .avi. Odd sizes are padded by a black row/column (yuv420p)."""

    CODECS = {".webm": ("libvpx-vp9", "libvpx"), ".avi": ("mpeg4",)}
    DEFAULT_CODECS = ("libx264", "h264", "mpeg4")

    def __init__(self, path, fps, crf=23):
        self.av = require_av()
        self.path = Path(path)
        self.fps = float(fps)
        self.crf = crf
        self.container = None
        self.stream = None
        self.frames_written = 0

    def _codec(self):
        for name in self.CODECS.get(self.path.suffix.lower(), self.DEFAULT_CODECS):
            if name in self.av.codecs_available:
                return name
        raise VideoError(f"{self.path}: no encoder for {self.path.suffix} in this PyAV build")

    def _open(self, height, width):
        from fractions import Fraction

        options = {}
        if self.path.suffix.lower() in (".mp4", ".m4v", ".mov"):
            options["movflags"] = "frag_keyframe+empty_moov"
        try:
            self.container = self.av.open(str(self.path), "w", options=options)
        except (self.av.error.FFmpegError, OSError) as exc:
            raise VideoError(f"{self.path}: cannot write a video there ({exc})") from exc
        codec = self._codec()
        rate = Fraction(self.fps).limit_denominator(1001)
        stream_options = {"g": str(max(int(round(self.fps)), 1))}
        if codec == "libx264":
            stream_options.update(crf=str(self.crf), preset="veryfast")
        self.stream = self.container.add_stream(codec, rate=rate, options=stream_options)
        self.stream.width, self.stream.height = width + width % 2, height + height % 2
        self.stream.pix_fmt = "yuv420p"

    def write(self, image):
        image = np.asarray(image, np.uint8)
        height, width = image.shape[:2]
        if self.stream is None:
            self._open(height, width)
            self.size = (height, width)
        if (height, width) != self.size:
            raise VideoError(f"{self.path}: frame {self.frames_written} is {width}x{height}, "
                             f"the video is {self.size[1]}x{self.size[0]}")
        if width % 2 or height % 2:
            image = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)))
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames_written += 1

    def close(self):
        if self.container is None:
            return
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
        finally:
            self.container.close()
            self.container = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
