"""Ctrl-C in the middle of a lab run stops everything and leaves nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lab.netns import check_prerequisites, tool_path
from tests.commands import FILTERWATCH
from tests.conftest import skip_or_fail_in_ci
from tests.lab.test_network import host_state

pytestmark = [pytest.mark.lab, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]

LONG_SCENARIO = """
name: interrupted
country: IR
round_seconds: 4
rounds: 100
sites: [{url: https://www.facebook.com/}, {url: https://en.wikipedia.org/}]
isps:
  - {name: TCI, asn: 58224, agents: 2, censor: {dns_inject: [facebook.com]}}
  - {name: MCI, asn: 197207, agents: 1, censor: {sni_reset: [facebook.com]}}
"""


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def test_ctrl_c_stops_the_lab_and_cleans_up(tmp_path: Path) -> None:
    """SIGINT to the run's process group (as a terminal's Ctrl-C) ends it with status 130:
    no lab process is left, the run directory is gone, the host's namespaces are as before."""
    problems = check_prerequisites()
    if problems:
        skip_or_fail_in_ci("; ".join(problems))
    scenario = tmp_path / "interrupted.yaml"
    scenario.write_text(LONG_SCENARIO)
    before = host_state()
    err_path = tmp_path / "stderr"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            [*FILTERWATCH, "lab", "run", str(scenario)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=ROOT,
            env={**os.environ, "PATH": tool_path()},
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while "round 1 of 100" not in err_path.read_text():
            assert proc.poll() is None, err_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "the lab did not start its rounds"
            time.sleep(0.2)
        match = re.search(r"running interrupted in (\S+)", err_path.read_text())
        assert match is not None
        run_dir = match.group(1)
        assert processes_mentioning(run_dir), "agents and collector should be running"
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    deadline = time.monotonic() + 10
    while processes_mentioning(run_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_mentioning(run_dir) == []
    assert not Path(run_dir).exists()
    assert host_state() == before
    assert "interrupted" in err_path.read_text()
