"""A harness module of these tests run inside the lab's sandbox, on a scenario of
``tests/lab/scenarios``: what test_network.py and test_rates.py start."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Final

from lab.netns import check_prerequisites, sandbox_command, tool_path
from tests.conftest import skip_or_fail_in_ci

ROOT: Final = Path(__file__).resolve().parents[2]
SCENARIOS: Final = Path(__file__).parent / "scenarios"


def require_lab() -> None:
    """Skip (fail, in CI) where the lab's prerequisites are missing."""
    problems = check_prerequisites()
    if problems:
        skip_or_fail_in_ci("; ".join(problems))


def harness_command(module: str, run_dir: Path, scenario: str, *args: str) -> list[str]:
    """``python -m module RUN_DIR SCENARIO ARGS...`` in the sandbox."""
    inner = [sys.executable, "-m", module, str(run_dir), str(SCENARIOS / scenario), *args]
    return sandbox_command(inner)


def harness_env() -> dict[str, str]:
    """The environment a harness runs in: the lab's tools first on the PATH."""
    return {**os.environ, "PATH": tool_path()}
