"""The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) for joint positions over time.

    f = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    smooth_xy = f.filter(xy, time)        # xy [K, 2] pixels, time in seconds

A low-pass filter whose cut-off frequency rises with the speed of the signal: a still joint is
smoothed strongly (jitter removed), a moving one lightly (little lag). cutoff = min_cutoff +
beta * |speed|, speed being the filtered derivative (cut-off d_cutoff); each step is the
exponential average x_hat = a * x + (1 - a) * x_hat_prev with a = 1 / (1 + 1 / (2 pi cutoff dt)).
"""
import math

import numpy as np


def _alpha(cutoff, dt):
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    def __init__(self, min_cutoff=1.0, beta=0.05, d_cutoff=1.0):
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.previous = None  # (time, x_hat, dx_hat)

    def filter(self, values, time):
        values = np.asarray(values, np.float64)
        if self.previous is None:
            self.previous = (float(time), values, np.zeros_like(values))
            return values.copy()
        last_time, x_hat, dx_hat = self.previous
        dt = max(float(time) - last_time, 1e-6)
        dx = (values - x_hat) / dt
        a_d = _alpha(self.d_cutoff, dt)
        dx_hat = a_d * dx + (1 - a_d) * dx_hat
        cutoff = self.min_cutoff + self.beta * np.abs(dx_hat)
        tau = 1.0 / (2.0 * math.pi * cutoff)
        a = 1.0 / (1.0 + tau / dt)
        x_hat = a * values + (1 - a) * x_hat
        self.previous = (float(time), x_hat, dx_hat)
        return x_hat.copy()
