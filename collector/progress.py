"""Progress lines on stderr for long commands, only when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Rewrites one status line on a terminal at most a few times a second; silent otherwise."""

    def __init__(self, stream: TextIO | None = None, interval_s: float = 0.25) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.interval_s = interval_s
        self._last = 0.0
        self._shown = False

    def update(self, text: str, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        self._shown = True
        self.stream.write("\r\x1b[2K" + text)
        self.stream.flush()

    def done(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
