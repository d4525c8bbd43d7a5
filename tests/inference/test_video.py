"""Video files written and read back with PyAV: frames, times, selections, damaged files."""
import numpy as np
import pytest
from PIL import Image

from mrcnn_kp.inference import video
from video_clips import FPS, SIZE, crossing_clip, write_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory, av):
    frames, truth = crossing_clip(num_frames=20)
    path = write_clip(tmp_path_factory.mktemp("clip") / "walk.mp4", frames)
    return path, frames, truth


def test_written_video_reads_back_frame_for_frame(clip):
    path, frames, _ = clip
    reader = video.open_video(path)
    assert (reader.width, reader.height) == SIZE and reader.fps == pytest.approx(FPS)
    assert reader.expected_frames() == 20
    read = list(reader)
    assert reader.error is None and reader.frames_read == 20
    assert [f.index for f in read] == list(range(20))
    np.testing.assert_allclose([f.time for f in read], np.arange(20) / FPS, atol=1e-6)
    assert read[0].image.shape == (SIZE[1], SIZE[0], 3) and read[0].image.dtype == np.uint8
    originals = np.stack(frames).astype(np.float32)
    for k, got in enumerate(read):  # lossy H.264, but the same picture, in the same place
        error = np.abs(originals - got.image.astype(np.float32)).mean(axis=(1, 2, 3))
        assert error[k] < 8.0 and np.argmin(error) == k


@pytest.mark.parametrize("suffix", [".avi", ".webm", ".mov"])
def test_other_containers_round_trip(tmp_path, av, suffix):
    frames, _ = crossing_clip(num_frames=4)
    path = write_clip(tmp_path / f"walk{suffix}", frames)
    read = list(video.open_video(path))
    assert len(read) == 4 and read[0].image.shape == (SIZE[1], SIZE[0], 3)
    assert np.abs(read[2].image.astype(np.float32) - frames[2]).mean() < 8.0


def test_every_start_end_and_max_frames_select_frames(clip):
    path = clip[0]
    picked = list(video.open_video(path, every=3, start=0.5, end=1.6))
    assert [f.index for f in picked] == [5, 8, 11, 14]
    assert [f.index for f in video.open_video(path, every=2, max_frames=3)] == [0, 2, 4]
    reader = video.open_video(path, start=1.2)
    assert [f.index for f in reader] == list(range(12, 20)) and reader.error is None
    with pytest.raises(video.VideoError, match="--end .* must be after --start"):
        video.open_video(path, start=1.0, end=0.5)


def test_truncated_video_keeps_the_frames_before_the_damage(clip, tmp_path):
    data = clip[0].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:len(data) * 6 // 10])
    reader = video.open_video(cut)
    read = list(reader)
    assert 5 <= len(read) < 20
    assert [f.index for f in read] == list(range(len(read)))
    assert "cut.mp4" in reader.error and "truncated or corrupt" in reader.error


def test_a_file_that_is_not_a_video_is_refused_clearly(tmp_path, av):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 50)
    with pytest.raises(video.VideoError, match="junk.mp4: not a readable video"):
        video.open_video(junk)
    with pytest.raises(video.VideoError, match="no such file or folder"):
        video.open_video(tmp_path / "missing.mp4")


def test_folder_of_numbered_frames_in_number_order(tmp_path):
    frames, _ = crossing_clip(num_frames=12)
    for k, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"frame_{k}.png")  # frame_10 after frame_9
    (tmp_path / "notes.txt").write_text("not a frame")
    reader = video.open_video(tmp_path, fps=4.0, every=5)
    read = list(reader)
    assert [f.index for f in read] == [0, 5, 10] and [f.time for f in read] == [0, 1.25, 2.5]
    np.testing.assert_array_equal(read[2].image, frames[10])
    assert reader.output_fps == pytest.approx(0.8)


def test_writer_pads_odd_sizes_and_refuses_a_size_change(tmp_path, av):
    path = tmp_path / "odd.mp4"
    with video.VideoWriter(path, fps=5) as writer:
        writer.write(np.full((31, 45, 3), 128, np.uint8))
        with pytest.raises(video.VideoError, match="frame 1 is 40x30, the video is 45x31"):
            writer.write(np.zeros((30, 40, 3), np.uint8))
    read = list(video.open_video(path))
    assert len(read) == 1 and read[0].image.shape == (32, 46, 3)


def test_camera_sources_per_platform():
    assert video.camera_source(0, "linux") == ("/dev/video0", "v4l2")
    assert video.camera_source("/dev/video3", "linux") == ("/dev/video3", "v4l2")
    assert video.camera_source(1, "darwin") == ("1", "avfoundation")
    assert video.camera_source("Cam", "win32") == ("video=Cam", "dshow")
    with pytest.raises(video.VideoError, match="DirectShow device name"):
        video.camera_source(0, "win32")


def test_a_missing_camera_is_reported(av, tmp_path):
    with pytest.raises(video.VideoError, match="camera 7: cannot open"):
        video.VideoReader(tmp_path / "video7", format="v4l2", name="camera 7")
