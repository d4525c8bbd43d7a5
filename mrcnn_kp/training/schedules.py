"""Learning-rate schedules: linear warm-up, then step decay or cosine decay.

Both are functions of the optimizer's global iteration count, so a run that is resumed (or that
moves on to the next training stage with its optimizer state carried over) continues the same
curve instead of warming up again.

    schedule = build_schedule(config, learning_rate=0.01, steps_per_epoch=100, total_epochs=20)
    schedule(0), schedule(1000)      # floats, or tensors inside a compiled step
"""
import math

import keras
from keras import ops


def _warmup_factor(step, warmup_steps):
    """min(1, (step + 1) / warmup_steps): the first update already uses a non-zero rate."""
    if not warmup_steps:
        return 1.0
    return ops.minimum(1.0, (step + 1.0) / float(warmup_steps))


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `learning_rate`, then multiply by `factor` at each boundary (in steps).

    lr(step) = learning_rate * warmup(step) * factor ** (number of boundaries <= step)
    """

    def __init__(self, learning_rate, warmup_steps=0, boundaries=(), factor=0.1):
        self.learning_rate = float(learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.boundaries = tuple(int(b) for b in boundaries)
        self.factor = float(factor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        decay = 1.0
        for boundary in self.boundaries:
            decay = decay * ops.where(step >= float(boundary), self.factor, 1.0)
        return self.learning_rate * _warmup_factor(step, self.warmup_steps) * decay

    def get_config(self):
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps,
                "boundaries": list(self.boundaries), "factor": self.factor}


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `learning_rate`, then half a cosine down to `alpha * learning_rate`
    at `decay_steps` (counted from step 0, warm-up included); constant after that."""

    def __init__(self, learning_rate, decay_steps, warmup_steps=0, alpha=0.0):
        if decay_steps < 1:
            raise ValueError(f"decay_steps must be >= 1, got {decay_steps}")
        self.learning_rate = float(learning_rate)
        self.decay_steps = int(decay_steps)
        self.warmup_steps = int(warmup_steps)
        self.alpha = float(alpha)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        span = max(self.decay_steps - self.warmup_steps, 1)
        progress = ops.clip((step - self.warmup_steps) / float(span), 0.0, 1.0)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
        decayed = self.alpha + (1.0 - self.alpha) * cosine
        return self.learning_rate * _warmup_factor(step, self.warmup_steps) * decayed

    def get_config(self):
        return {"learning_rate": self.learning_rate, "decay_steps": self.decay_steps,
                "warmup_steps": self.warmup_steps, "alpha": self.alpha}


def build_schedule(config, learning_rate, steps_per_epoch, total_epochs):
    """The schedule that config.LR_SCHEDULE names.

    learning_rate: the peak rate (train()'s argument; matterport passes it per stage).
    steps_per_epoch, total_epochs: where the decay ends (cosine) and where the epoch
    boundaries of LR_STEP_DECAY_EPOCHS fall (step), in optimizer iterations.
    """
    warmup = int(config.LR_WARMUP_STEPS)
    if config.LR_SCHEDULE == "cosine":
        return WarmupCosineDecay(learning_rate, max(1, int(total_epochs) * int(steps_per_epoch)),
                                 warmup_steps=warmup)
    boundaries = ()
    if config.LR_SCHEDULE == "step":
        boundaries = tuple(int(e) * int(steps_per_epoch) for e in config.LR_STEP_DECAY_EPOCHS)
    return WarmupStepDecay(learning_rate, warmup_steps=warmup, boundaries=boundaries,
                           factor=config.LR_STEP_FACTOR)
