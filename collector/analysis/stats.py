"""Small, exact statistics the leak detector is built on."""

from __future__ import annotations

import math


def wilson_bounds(successes: int, trials: int, z: float) -> tuple[float, float]:
    """Wilson score interval for a binomial share; (0, 1) when there are no trials.

    Chosen over the raw ratio because it stays honest with the handful of measurements a
    bucket holds: 2 of 2 is not "100 %", it is "at least about two thirds" at z = 1.
    """
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    z2 = z * z
    denominator = 1.0 + z2 / trials
    centre = p + z2 / (2 * trials)
    spread = z * math.sqrt(p * (1.0 - p) / trials + z2 / (4 * trials * trials))
    lower = max(0.0, (centre - spread) / denominator)
    upper = min(1.0, (centre + spread) / denominator)
    return lower, upper
