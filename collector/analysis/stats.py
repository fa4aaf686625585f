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


def binomial_tail(successes: int, trials: int, p: float) -> float:
    """P(X >= successes) for X ~ Binomial(trials, p), summed in log space (exact, no scipy).

    Used to ask how improbable a run of accessible measurements is under an ISP's own
    baseline share: a small tail means the ISP is not behaving as it usually does.
    """
    if successes <= 0:
        return 1.0
    if successes > trials:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    log_terms = [
        math.lgamma(trials + 1)
        - math.lgamma(k + 1)
        - math.lgamma(trials - k + 1)
        + k * log_p
        + (trials - k) * log_q
        for k in range(successes, trials + 1)
    ]
    top = max(log_terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in log_terms))


def beta_binomial_tail(successes: int, trials: int, alpha: float, beta: float) -> float:
    """P(X >= successes) for X ~ BetaBinomial(trials, alpha, beta), in log space.

    The predictive probability of ``successes`` of ``trials`` when the share itself is only
    known as Beta(alpha, beta): after a accessible of n, Beta(a + prior, n - a + prior).
    Used where a baseline share is estimated from few observations: it is more cautious
    than the binomial tail under the estimate, by as much as the estimate is uncertain.
    """
    if successes <= 0:
        return 1.0
    if successes > trials:
        return 0.0
    if alpha <= 0.0:
        return 0.0
    if beta <= 0.0:
        return 1.0
    log_norm = math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)
    log_terms = [
        math.lgamma(trials + 1)
        - math.lgamma(k + 1)
        - math.lgamma(trials - k + 1)
        + math.lgamma(k + alpha)
        + math.lgamma(trials - k + beta)
        - math.lgamma(trials + alpha + beta)
        - log_norm
        for k in range(successes, trials + 1)
    ]
    top = max(log_terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in log_terms))
