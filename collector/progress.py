"""What long commands share: progress lines on stderr (only when stderr is a terminal),
and running with the cyclic garbage collector off."""

from __future__ import annotations

import functools
import gc
import sys
import time
from collections.abc import Callable
from typing import TextIO, TypeVar

T = TypeVar("T")


def without_gc(command: Callable[..., T]) -> Callable[..., T]:
    """``command`` run with the cyclic garbage collector off. Hundreds of thousands of small
    long-lived objects (the buckets): the collector would scan them again and again for
    nothing; there are no cycles to find here."""

    @functools.wraps(command)
    def run(*args: object, **kwargs: object) -> T:
        gc.disable()
        try:
            return command(*args, **kwargs)
        finally:
            gc.enable()

    return run


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
