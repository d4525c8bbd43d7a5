"""Test clips: synthetic people walking, encoded to real video files with PyAV."""
from mrcnn_kp.data.synthetic_video import Walker, moving_people_clip
from mrcnn_kp.inference.video import VideoWriter

SIZE = (192, 112)  # (width, height): small, so encoding and the tests stay fast
FPS = 10.0


def crossing_walkers():
    """Two people crossing in the middle of the frame, a third missing on frames 6-8."""
    return [Walker(start=(20, 70), velocity=(8, 0), height=70),
            Walker(start=(180, 72), velocity=(-8, 0), height=66),
            Walker(start=(96, 60), velocity=(0, 0.5), height=40, hidden=(6, 7, 8))]


def crossing_clip(num_frames=20, seed=2):
    return moving_people_clip(crossing_walkers(), num_frames, size=SIZE, seed=seed)


def write_clip(path, frames, fps=FPS):
    with VideoWriter(path, fps) as writer:
        for frame in frames:
            writer.write(frame)
    return path
