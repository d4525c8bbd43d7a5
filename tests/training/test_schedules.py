import math

import numpy as np
import pytest
from keras import ops

from mrcnn_kp.config import TinyConfig
from mrcnn_kp.training.schedules import WarmupCosineDecay, WarmupStepDecay, build_schedule


def lr(schedule, step):
    return float(ops.convert_to_numpy(schedule(step)))


def test_warmup_is_linear_and_reaches_the_peak():
    schedule = WarmupStepDecay(0.1, warmup_steps=4)
    assert [round(lr(schedule, s), 6) for s in range(6)] == [0.025, 0.05, 0.075, 0.1, 0.1, 0.1]


def test_step_decay_multiplies_at_each_epoch_boundary():
    config = TinyConfig(LR_SCHEDULE="step", LR_STEP_DECAY_EPOCHS=(2, 3), LR_STEP_FACTOR=0.1,
                        LR_WARMUP_STEPS=0)
    schedule = build_schedule(config, 0.02, steps_per_epoch=10, total_epochs=4)
    assert schedule.boundaries == (20, 30)
    np.testing.assert_allclose([lr(schedule, s) for s in (0, 19, 20, 29, 30, 1000)],
                               [0.02, 0.02, 0.002, 0.002, 0.0002, 0.0002], rtol=1e-6)


def test_cosine_runs_from_the_peak_after_warmup_to_zero_at_the_last_step():
    config = TinyConfig(LR_SCHEDULE="cosine", LR_WARMUP_STEPS=10)
    schedule = build_schedule(config, 0.01, steps_per_epoch=25, total_epochs=4)  # 100 steps
    assert isinstance(schedule, WarmupCosineDecay) and schedule.decay_steps == 100
    assert lr(schedule, 0) == pytest.approx(0.001)
    assert lr(schedule, 10) == pytest.approx(0.01)
    assert lr(schedule, 55) == pytest.approx(0.005, rel=1e-5)  # half-way through the cosine
    assert lr(schedule, 100) == pytest.approx(0.0, abs=1e-9)
    assert lr(schedule, 150) == pytest.approx(0.0, abs=1e-9)


def test_constant_schedule_only_warms_up():
    config = TinyConfig(LR_SCHEDULE="constant", LR_WARMUP_STEPS=2, LR_STEP_DECAY_EPOCHS=(1,))
    schedule = build_schedule(config, 0.5, steps_per_epoch=1, total_epochs=9)
    assert [lr(schedule, s) for s in (0, 1, 5)] == [0.25, 0.5, 0.5]


@pytest.mark.parametrize("schedule", [WarmupStepDecay(0.1, 3, (10, 20), 0.5),
                                      WarmupCosineDecay(0.1, 50, 3, alpha=0.1)])
def test_get_config_round_trip_gives_the_same_curve(schedule):
    clone = type(schedule).from_config(schedule.get_config())
    for step in (0, 2, 11, 25, 60):
        assert lr(clone, step) == pytest.approx(lr(schedule, step))


def test_cosine_with_alpha_ends_at_alpha_times_the_peak():
    schedule = WarmupCosineDecay(0.2, decay_steps=40, alpha=0.05)
    assert lr(schedule, 40) == pytest.approx(0.01)
    assert lr(schedule, 20) == pytest.approx(0.2 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi / 2))))
