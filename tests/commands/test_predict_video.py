"""`mrcnn-kp predict` on videos end to end: an encoded clip in, an annotated video and json out.

The model is a stand-in that "detects" the true people of the clip: it finds which original
frame a decoded frame is (nearest in pixels) and returns that frame's true poses, so the test
checks decoding, batching, tracking, drawing and the files, not a model's accuracy. One test
runs the real TinyConfig model (random weights) through MaskRCNN.track and the command.
"""
import json

import numpy as np
import pytest

from mrcnn_kp import cli
from mrcnn_kp.data.synthetic_video import truth_as_result
from mrcnn_kp.inference import predictor as predictor_lib
from mrcnn_kp.inference import video
from video_clips import FPS, SIZE, crossing_clip, write_clip


class TruthPredictor(predictor_lib.Predictor):
    def __init__(self, config, frames, truth):
        super().__init__(None, config)
        self.frames = np.stack(frames).astype(np.float32)  # [T, H, W, 3]
        self.truth = truth
        self.batches = []

    def _detect_images(self, images, verbose):
        self.batches.append(len(images))
        results = []
        for image in images:
            distance = np.abs(self.frames - image.astype(np.float32)).mean(axis=(1, 2, 3))
            result = truth_as_result(self.truth[int(np.argmin(distance))])
            result["keypoints"][..., 2] = np.where(result["keypoints"][..., 2] > 0, 5.0, -5.0)
            results.append(result)
        return results


@pytest.fixture(scope="module")
def clip(tmp_path_factory, av):
    frames, truth = crossing_clip(num_frames=20)
    return write_clip(tmp_path_factory.mktemp("clip") / "walk.mp4", frames), frames, truth


@pytest.fixture
def truth_model(monkeypatch, clip):
    made = []

    def load(config, weights=None):
        made.append(TruthPredictor(config, clip[1], clip[2]))
        return made[-1], None

    monkeypatch.setattr(predictor_lib, "load_predictor", load)
    return made


def predict(*argv):
    return cli.main(["predict", *map(str, argv), "--weights", "none", "--config", "tiny"])


def test_video_in_annotated_video_and_tracked_json_out(clip, truth_model, tmp_path, capsys):
    path, frames, truth = clip
    out = tmp_path / "out"
    assert predict(path, "--output", out) == 0
    assert "walk.mp4: 20 frame(s) processed, 3 people tracked" in capsys.readouterr().out
    assert truth_model[0].batches == [2] * 10  # TinyConfig's batch of 2

    table = json.loads((out / "walk_frames.json").read_text())
    assert [(f["id"], f["frame"], f["width"], f["height"]) for f in table] == [
        (k + 1, k, *SIZE) for k in range(20)]
    assert table[5]["time"] == pytest.approx(5 / FPS)
    records = json.loads((out / "walk_pose.json").read_text())
    assert len(records) == sum(len(people) for people in truth) == 57
    assert set(records[0]) == {"image_id", "file_name", "category_id", "bbox", "score",
                               "keypoints", "frame", "time", "track_id"}
    # each true person (by box position) keeps one track id through the clip
    ids_of = {}
    for record in records:
        people = truth[record["frame"]]
        x, y, w, h = record["bbox"]
        person = min(people, key=lambda p: np.abs(p["box"] - [x, y, x + w, y + h]).sum())
        ids_of.setdefault(person["id"], set()).add(record["track_id"])
    assert ids_of == {1: {1}, 2: {2}, 3: {3}}

    written = list(video.open_video(out / "walk_pose.mp4"))
    assert len(written) == 20 and written[0].image.shape == (SIZE[1], SIZE[0], 3)
    drawn = np.abs(written[10].image.astype(np.float32) - frames[10]).mean()
    assert drawn > 2.0  # skeletons, boxes and labels on the frame


def test_every_and_max_frames(clip, truth_model, tmp_path, capsys):
    out = tmp_path / "out"
    assert predict(clip[0], "--output", out, "--every", "3", "--max-frames", "4",
                   "--no-video") == 0
    table = json.loads((out / "walk_frames.json").read_text())
    assert [f["frame"] for f in table] == [0, 3, 6, 9]
    assert not (out / "walk_pose.mp4").exists()


def test_truncated_video_reports_and_keeps_what_was_read(clip, truth_model, tmp_path, capsys):
    data = clip[0].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:len(data) * 6 // 10])
    out = tmp_path / "out"
    assert predict(cut, "--output", out) == 1
    err = capsys.readouterr().err
    assert "error: " in err and "cut.mp4" in err and "truncated or corrupt" in err
    table = json.loads((out / "cut_frames.json").read_text())
    assert 5 <= len(table) < 20 and "frame(s) read before it are in the outputs" in err
    records = json.loads((out / "cut_pose.json").read_text())
    assert {r["frame"] for r in records} == set(range(len(table)))
    assert len(list(video.open_video(out / "cut_pose.mp4"))) == len(table)


def test_bad_video_inputs_fail_clearly(tmp_path, truth_model, capsys, av):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"x" * 1000)
    assert predict(junk, "--output", tmp_path / "out") == 1
    assert "junk.mp4: not a readable video" in capsys.readouterr().err
    assert predict(junk, tmp_path / "photo.jpg", "--output", tmp_path / "o2") == 1
    assert "photo.jpg: no such file or folder" in capsys.readouterr().err
    assert predict(tmp_path, "--frames", "--output", tmp_path / "o3") == 1
    assert "no image files to read as frames" in capsys.readouterr().err


def test_frames_folder_is_read_as_a_video(clip, truth_model, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for k, frame in enumerate(clip[1][:6]):
        Image.fromarray(frame).save(folder / f"{k:04d}.png")
    out = tmp_path / "out"
    assert predict(folder, "--frames", "--fps", "5", "--output", out) == 0
    table = json.loads((out / "frames_frames.json").read_text())
    assert [f["time"] for f in table] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert len(list(video.open_video(out / "frames_pose.mp4"))) == 6


def test_real_tiny_model_through_track_and_the_command(clip, tmp_path, monkeypatch, capsys):
    """MaskRCNN.track and `mrcnn-kp predict` with the real TinyConfig model (random weights,
    every detection kept), built once."""
    from mrcnn_kp.config import TinyConfig
    from mrcnn_kp.maskrcnn import MaskRCNN

    short = write_clip(tmp_path / "short.mp4", clip[1][:4])
    config = TinyConfig().copy(DETECTION_MIN_CONFIDENCE=0.0)
    model = MaskRCNN("inference", config)
    results = list(model.track(short, min_score=0.0))
    assert len(results) == 4
    for result in results:
        n = len(result["rois"])
        assert result["track_ids"].shape == (n,) and result["keypoints"].shape == (n, 17, 3)
        assert (result["track_ids"] >= 1).all()
    assert sum(len(r["rois"]) for r in results) > 0

    monkeypatch.setattr(predictor_lib, "load_predictor",
                        lambda config, weights=None: (model._predictor, None))
    out = tmp_path / "out"
    assert predict(short, "--output", out, "--picture-min-score", "0") == 0
    assert "short.mp4: 4 frame(s) processed" in capsys.readouterr().out
    records = json.loads((out / "short_pose.json").read_text())
    assert len(records) == sum(len(r["rois"]) for r in results)
    assert all(r["track_id"] >= 1 and len(r["keypoints"]) == 51 for r in records)
    written = list(video.open_video(out / "short_pose.mp4"))
    assert len(written) == 4 and written[0].image.shape == (SIZE[1], SIZE[0], 3)


def test_ctrl_c_keeps_the_frames_done_and_stops(clip, truth_model, tmp_path, capsys,
                                                monkeypatch):
    calls = []
    original = TruthPredictor._detect_images

    def interrupted_on_third_batch(self, images, verbose):
        calls.append(len(images))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, images, verbose)

    monkeypatch.setattr(TruthPredictor, "_detect_images", interrupted_on_third_batch)
    out = tmp_path / "out"
    assert predict(clip[0], clip[0], "--output", out) == 1  # the second video is not started
    captured = capsys.readouterr()
    assert "walk.mp4: interrupted (Ctrl-C)" in captured.err
    assert "walk_2" not in captured.out and len(calls) == 3
    assert len(json.loads((out / "walk_frames.json").read_text())) == 4
    assert len(list(video.open_video(out / "walk_pose.mp4"))) == 4
