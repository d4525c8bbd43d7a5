"""Synthetic walking-people clips: the people move as told, truth matches the pixels."""
import numpy as np

from mrcnn_kp.data.synthetic_video import Walker, moving_people_clip, truth_as_result


def test_walkers_move_by_their_velocity_and_hidden_frames_drop_them():
    walkers = [Walker(start=(40, 70), velocity=(5, 0), height=60, hidden=(3,)),
               Walker(start=(150, 70), velocity=(-2, 1), height=50)]
    frames, truth = moving_people_clip(walkers, 6, size=(200, 120), seed=0)
    assert len(frames) == 6 and frames[0].shape == (120, 200, 3)
    assert [[p["id"] for p in people] for people in truth] == [[1, 2]] * 3 + [[2]] + [[1, 2]] * 2
    hips = [(p[0]["keypoints"][11, :2] + p[0]["keypoints"][12, :2]) / 2 for p in truth[:3]]
    np.testing.assert_allclose(hips[1][0] - hips[0][0], 5.0, atol=1e-6)
    # the person changes the pixels inside its box, not far outside
    background, _ = moving_people_clip([], 1, size=(200, 120), seed=0)
    x1, y1, x2, y2 = truth[0][0]["box"].astype(int)
    changed = np.abs(frames[0].astype(int) - background[0]).sum(axis=2) > 0
    assert changed[y1:y2, x1:x2].mean() > 0.1
    result = truth_as_result(truth[3])
    assert result["rois"].shape == (1, 4) and result["keypoints"].shape == (1, 17, 3)
