"""The event loop never blocks: blockbuster active for every test that runs on the loop.

A blocking call made while the loop runs (``time.sleep``, a blocking socket, file or SQLite
call, ``os.stat`` and the rest of blockbuster's list) raises ``BlockingError`` and fails the
test. What may block is listed here, each with why; nothing else is let through.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable, Iterator
from fnmatch import fnmatch
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import pytest_asyncio
from blockbuster import BlockBuster, BlockBusterFunction

TESTS_DIR = str(Path(__file__).resolve().parent) + "/"
_RUNS_ON_THE_LOOP = inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR

# Test code's own file and SQLite work: writing a config into tmp_path, reading back what the
# code under test wrote. Only these families of calls, and only when the innermost coroutine
# on the stack is a test or a fixture: code under test that blocks the loop is still caught,
# and test code may never sleep, wait on a lock or use a blocking socket on the loop.
TEST_CODE_MAY_BLOCK = ("os.*", "io.*", "sqlite3.*")


def _innermost_coroutine(frame: FrameType | None) -> FrameType | None:
    while frame is not None and not frame.f_code.co_flags & _RUNS_ON_THE_LOOP:
        frame = frame.f_back
    return frame


def called_by_test_code(*_: Any, **__: Any) -> bool:
    coroutine = _innermost_coroutine(sys._getframe(1))
    return coroutine is not None and coroutine.f_code.co_filename.startswith(TESTS_DIR)


# Writing to /dev/null never waits: pytest's logging plugin keeps a handler on it, which
# the standard library's loggers (asyncpg's among them) reach.
WRITES_TO_DEVNULL = ("io.*.write",)


def writes_to_devnull(file: Any, *_: Any, **__: Any) -> bool:
    return getattr(file, "name", None) == os.devnull


# Calls that block by design, each allowed in one function only: (blockbuster's names of
# the blocking calls, as fnmatch patterns; the file; the function).
ALLOWED: list[tuple[tuple[str, ...], str, str]] = [
    # A module's first import reads its files and runs its top level (shared/probes/web.py
    # reads the package's version): once per process, at start-up. Blockbuster already lets
    # the import system itself stat and read.
    (("os.*", "io.*"), "<frozen importlib._bootstrap>", "_find_and_load"),
    # One mkdir of the state directory when the agent starts or enrolls, before anything
    # else runs on the loop.
    (("os.mkdir", "os.stat"), "agent/state.py", "ensure_state_dir"),
    # The agent's fingerprint files, read and compiled once when it starts (8 ms for the
    # shipped set), before it runs any task.
    (("os.*", "io.*"), "agent/runner.py", "real_probing"),
    # connect() on a UDP socket to a numeric address is the kernel's route lookup: nothing
    # is sent and nothing waits.
    (("socket.socket.connect",), "agent/identity.py", "local_address_fingerprint"),
    # asyncpg looks for its client files (~/.postgresql certificates, .pgpass) as it opens a
    # connection: a few stats of the home directory, with no asynchronous way in asyncpg.
    (("os.*", "io.*"), "asyncpg/connect_utils.py", "_parse_connect_dsn_and_args"),
    # Playwright's start (the dashboard's browser tests) looks for its driver on disk, once.
    (("os.*",), "playwright/_impl/_driver.py", "compute_driver_executable"),
]


def _named(guard: BlockBuster, patterns: tuple[str, ...]) -> list[BlockBusterFunction]:
    found = [f for name, f in guard.functions.items() if any(fnmatch(name, p) for p in patterns)]
    assert found, f"blockbuster has no blocking call named {patterns}"
    return found


def _or(allowed: Callable[..., bool], more: Callable[..., bool]) -> Callable[..., bool]:
    def predicate(*args: Any, **kwargs: Any) -> bool:
        return allowed(*args, **kwargs) or more(*args, **kwargs)

    return predicate


def make_guard() -> BlockBuster:
    """Blockbuster with its default list of blocking calls and the allowances above."""
    guard = BlockBuster()
    for patterns, file, function_name in ALLOWED:
        for function in _named(guard, patterns):
            function.can_block_in(file, function_name)
    for patterns, more in (
        (TEST_CODE_MAY_BLOCK, called_by_test_code),
        (WRITES_TO_DEVNULL, writes_to_devnull),
    ):
        for function in _named(guard, patterns):
            function.can_block_predicate = _or(function.can_block_predicate, more)
    return guard


@pytest.fixture(autouse=True)
def blockbuster(request: pytest.FixtureRequest) -> Iterator[BlockBuster | None]:
    """Blockbuster active for the whole of an async test, the set-up and teardown of its
    fixtures included (an autouse fixture is set up before the fixtures a test asks for)."""
    if not pytest_asyncio.is_async_test(request.node):
        yield None
        return
    guard = make_guard()
    guard.activate()
    try:
        yield guard
    finally:
        guard.deactivate()
