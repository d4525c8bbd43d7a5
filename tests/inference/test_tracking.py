"""PoseTracker on detections taken from the true poses of synthetic walking people."""
import numpy as np
import pytest

from mrcnn_kp import constants
from mrcnn_kp.data.synthetic_video import Walker, moving_people_clip, truth_as_result
from mrcnn_kp.inference.smoothing import OneEuroFilter
from mrcnn_kp.inference.tracking import (UNTRACKED, PoseTracker, box_iou_matrix, oks_matrix,
                                         track_results)

from video_clips import crossing_clip


def track_truth(truth, tracker=None):
    """{true person id: [track id on each frame it is in]} for a clip's truth."""
    tracker = tracker or PoseTracker()
    seen = {}
    for people in truth:
        ids = tracker.update(truth_as_result(people))["track_ids"]
        for person, track_id in zip(people, ids):
            seen.setdefault(person["id"], []).append(int(track_id))
    return seen


def test_box_iou_matrix_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]])
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(box_iou_matrix(a, b), [[50 / 150, 1, 0], [0, 0, 0]])


def test_oks_matrix_is_cocos_formula_over_shared_joints():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.uniform(0, 100, (1, 17, 2)), np.full((1, 17, 1), 2.0)], axis=2)
    b = a.copy()
    b[0, :, 0] += 3.0  # every joint 3 px to the right
    b[0, :5, 2] = 0.0  # the face not labelled: left out
    oks, shared = oks_matrix(a, b, areas=[2500.0])
    k2 = (2 * constants.OKS_SIGMAS[5:]) ** 2
    expected = np.mean(np.exp(-9.0 / k2 / 2500.0 / 2))
    assert shared[0, 0] == 12
    assert oks[0, 0] == pytest.approx(expected, rel=1e-12)
    assert oks_matrix(a, a, [2500.0])[0][0, 0] == pytest.approx(1.0)


def test_ids_stay_constant_when_people_cross_and_one_is_missing():
    frames, truth = crossing_clip(num_frames=20)
    assert [p["id"] for p in truth[7]] == [1, 2]  # walker 3 hidden on frames 6-8
    # the two walkers' boxes overlap heavily where they cross
    crossing = max(box_iou_matrix([p[0]["box"]], [p[1]["box"]])[0, 0] for p in truth)
    assert crossing > 0.7
    seen = track_truth(truth)
    assert sorted(seen) == [1, 2, 3]
    for person, ids in seen.items():
        assert len(set(ids)) == 1, (person, ids)
    assert len({ids[0] for ids in seen.values()}) == 3
    assert len(seen[3]) == 17  # present on 17 of 20 frames, one id throughout


def test_a_person_lost_longer_than_the_memory_gets_a_new_id():
    walkers = [Walker(start=(30, 70), velocity=(4, 0), height=60, hidden=tuple(range(4, 9)))]
    _, truth = moving_people_clip(walkers, 12, size=(160, 100), seed=1)
    assert track_truth(truth, PoseTracker(max_lost=10))[1] == [1] * 7
    assert track_truth(truth, PoseTracker(max_lost=3))[1] == [1] * 4 + [2] * 3


def test_low_scores_are_not_tracked_and_new_people_get_new_ids():
    _, truth = crossing_clip(num_frames=3)
    tracker = PoseTracker(min_score=0.5)
    result = truth_as_result(truth[0])
    result["scores"] = np.array([0.9, 0.2, 0.9], np.float32)
    np.testing.assert_array_equal(tracker.update(result)["track_ids"], [1, UNTRACKED, 2])
    ids = tracker.update(truth_as_result(truth[1]))["track_ids"]
    assert ids[0] == 1 and ids[2] == 2 and ids[1] == 3
    empty = tracker.update({"rois": np.zeros((0, 4)), "scores": np.zeros(0),
                            "class_ids": np.zeros(0, np.int32)})
    assert empty["track_ids"].shape == (0,)


def test_smoothing_reduces_joint_jitter_and_keeps_the_input():
    """One-Euro on noisy joints: a near-still person's jitter drops, walkers stay close."""
    _, truth = crossing_clip(num_frames=20)
    rng = np.random.default_rng(0)
    errors = {"raw": {1: [], 3: []}, "smooth": {1: [], 3: []}}
    tracker = PoseTracker(smoothing=OneEuroFilter)
    for t, people in enumerate(truth):
        result = truth_as_result(people)
        clean = result["keypoints"].copy()
        result["keypoints"][..., :2] += rng.normal(0, 2.0, result["keypoints"][..., :2].shape)
        noisy = result["keypoints"].copy()
        out = tracker.update(result, time=t / 10.0)
        np.testing.assert_array_equal(result["keypoints"], noisy)  # the input is not changed
        for i, person in enumerate(people):
            inside = clean[i, :, 2] > 0
            if t >= 10 and person["id"] in (1, 3) and inside.any():
                for name, pose in (("raw", noisy), ("smooth", out["keypoints"])):
                    error = np.abs(pose[i, :, :2] - clean[i, :, :2])[inside].mean()
                    errors[name][person["id"]].append(error)
    still_raw, still_smooth = np.mean(errors["raw"][3]), np.mean(errors["smooth"][3])
    assert still_smooth < 0.7 * still_raw  # 0.5 px a frame: jitter removed
    walker_raw, walker_smooth = np.mean(errors["raw"][1]), np.mean(errors["smooth"][1])
    assert walker_smooth < walker_raw + 3.0  # 8 px a frame: a little lag


def test_track_results_passes_frame_times():
    class Key:
        def __init__(self, time):
            self.time = time

    _, truth = crossing_clip(num_frames=4)
    pairs = [(Key(t * 0.1), truth_as_result(p)) for t, p in enumerate(truth)]
    out = list(track_results(pairs))
    assert [k for k, _ in out] == [k for k, _ in pairs]
    assert [r["track_ids"].tolist() for _, r in out][-1] == [1, 2, 3]
