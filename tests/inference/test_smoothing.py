"""The One-Euro filter: still signals are smoothed, fast ones followed."""
import numpy as np
import pytest

from mrcnn_kp.inference.smoothing import OneEuroFilter


def test_first_value_passes_and_a_constant_stays():
    f = OneEuroFilter()
    x = np.array([[10.0, 20.0]])
    np.testing.assert_array_equal(f.filter(x, 0.0), x)
    np.testing.assert_allclose(f.filter(x, 0.1), x)


def test_step_response_is_the_exponential_average_at_the_cutoff():
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    f.filter(np.zeros(1), 0.0)
    dt = 0.1
    alpha = 1.0 / (1.0 + 1.0 / (2 * np.pi * 1.0 * dt))
    assert f.filter(np.ones(1), dt)[0] == pytest.approx(alpha)


def test_a_larger_beta_follows_motion_closer():
    times = np.arange(30) / 30.0
    track = 300.0 * times  # 300 px/s
    lag = {}
    for beta in (0.0, 0.1):
        f = OneEuroFilter(min_cutoff=1.0, beta=beta)
        out = [f.filter(np.array([x]), t)[0] for x, t in zip(track, times)]
        lag[beta] = track[-1] - out[-1]
    assert lag[0.1] < 0.3 * lag[0.0]
