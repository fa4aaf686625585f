"""One absolute deadline shared by every step of a measurement.

A step never gets a fresh timeout of its own: it gets at most a share of the whole
measurement's time, cut off at the measurement's deadline, so a slow DNS answer leaves
less for TCP and nothing can make the measurement run past ``timeout_s``. The shares
keep one black-holed step from starving the steps that tell censorship methods apart
(the innocuous-SNI handshake after a timed-out real one, for instance).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Deadline:
    """An absolute time on the running loop's clock, and the measurement's length."""

    at: float
    total_s: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """The deadline ``seconds`` from now on the running loop's clock."""
        return cls(at=asyncio.get_running_loop().time() + seconds, total_s=seconds)

    def remaining(self) -> float:
        """Seconds left before the deadline (never negative)."""
        return max(0.0, self.at - asyncio.get_running_loop().time())

    def step(self, share: float) -> float:
        """The loop time at which a step that may use ``share`` of the total must stop."""
        now = asyncio.get_running_loop().time()
        return min(self.at, now + self.total_s * share)
