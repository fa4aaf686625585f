"""End to end: every shipped lab scenario, run for real, meets its expected outcome.

Each scenario is one ``filterwatch lab run SCENARIO --json``: namespaces, kernel censors,
a real collector and real agents enrolled with a code. The runs are independent (each
has namespaces of its own), so the module runs a few at once to keep the suite short;
one of them runs as an unprivileged user (uid 65534), which is how the lab must also work.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab.netns import check_prerequisites, tool_path
from lab.scenario import BUILTIN_DIR, load_scenario
from tests.conftest import skip_or_fail_in_ci

pytestmark = [pytest.mark.lab, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 420
AT_ONCE = 3  # runs per batch (see ``outcomes``): on two cores, three keep verdicts clean
AGENTS_AT_ONCE = 23  # and no more agents than this in a batch


@dataclass(frozen=True)
class Expected:
    """A shipped scenario's outcome, from its ground truth: how many leaks, uncorroborated
    lapses and divergences (by kind), and the window error allowed at each end."""

    leaks: int = 0
    uncorroborated: int = 0
    divergences: tuple[str, ...] = ()  # kinds, sorted
    window: int = 1


EXPECTED = {
    "iran-2013": Expected(leaks=2),
    "vpn-volunteer": Expected(),
    "site-down": Expected(),
    "sni-glitch": Expected(),
    "ip-blocking": Expected(leaks=1),
    "two-leaks": Expected(leaks=2),
    "single-agent": Expected(uncorroborated=1),
    "probabilistic-blocking": Expected(divergences=("partial",)),
    "never-filtered": Expected(divergences=("unfiltered",)),
    "rolling-block": Expected(divergences=("lagging", "lagging")),
    # issue 6: within two buckets where the ISP blocked only partly before
    "partial-then-lapse": Expected(leaks=1, divergences=("partial",), window=2),
}
UNPRIVILEGED = "single-agent"
UNPRIVILEGED_UID = 65534


@dataclass
class Run:
    name: str
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path


@dataclass(frozen=True)
class Outcome:
    code: int
    doc: dict[str, Any] | None
    stderr: str


def _unprivileged_python(setpriv: str) -> tuple[str, dict[str, str]]:
    """An interpreter uid 65534 can run inside its own user namespace, and its module path.

    A venv made from a system Python is fine as it is; a venv whose interpreter lives in
    root's home (pyenv) is out of reach, and then the system's python3 of the same version
    runs the project from this tree with the venv's packages.
    """
    unshare = shutil.which("unshare", path=tool_path()) or "unshare"
    ids = [f"--reuid={UNPRIVILEGED_UID}", f"--regid={UNPRIVILEGED_UID}", "--clear-groups"]
    probe = subprocess.run(
        [setpriv, *ids, unshare, "--user", "--map-root-user", sys.executable, "-c", "pass"],
        capture_output=True,
        cwd=ROOT,
    )
    if probe.returncode == 0:
        return sys.executable, {}
    system = shutil.which("python3", path="/usr/bin:/bin")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    same = f"import sys; sys.exit('%d.%d' % sys.version_info[:2] != '{version}')"
    if system is None or subprocess.run([system, "-c", same]).returncode != 0:
        skip_or_fail_in_ci(f"no Python {version} that uid {UNPRIVILEGED_UID} can run")
    site = sysconfig.get_paths()["purelib"]
    return system, {"PYTHONPATH": os.pathsep.join([str(ROOT), site])}


def _start(name: str, workdir: Path, homes: list[Path]) -> Run:
    out, err = workdir / f"{name}.json", workdir / f"{name}.err"
    python = sys.executable
    env = {**os.environ, "PATH": tool_path()}
    prefix: list[str] = []
    # Run by root, one run switches to uid 65534; run by anyone else, every run is unprivileged.
    if name == UNPRIVILEGED and os.geteuid() == 0:
        setpriv = shutil.which("setpriv", path=tool_path()) or "setpriv"
        python, extra = _unprivileged_python(setpriv)
        # Its own HOME and TMPDIR, which it can write (pytest's directories are root's).
        home = Path(tempfile.mkdtemp(prefix="filterwatch-lab-nobody-"))
        home.chmod(0o777)
        homes.append(home)
        env.update(extra, HOME=str(home), TMPDIR=str(home))
        prefix = [setpriv, f"--reuid={UNPRIVILEGED_UID}", f"--regid={UNPRIVILEGED_UID}"]
        prefix.append("--clear-groups")
    scenario = str(BUILTIN_DIR / f"{name}.yaml")
    cmd = [*prefix, python, "-m", "filterwatch", "lab", "run", scenario, "--json"]
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(cmd, stdout=o, stderr=e, cwd=ROOT, env=env)
    return Run(name, proc, out, err)


def _finish(run: Run) -> Outcome:
    code = run.proc.wait()
    text = run.out.read_text()
    doc = json.loads(text) if text.strip() else None
    return Outcome(code, doc, run.err.read_text())


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    problems = check_prerequisites()
    if problems:
        skip_or_fail_in_ci("the lab cannot run here: " + "; ".join(problems))
    workdir = tmp_path_factory.mktemp("lab-runs")
    workdir.chmod(0o755)
    shipped = sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))
    assert sorted(EXPECTED) == shipped, "every shipped scenario needs an expected outcome here"

    # In batches that start together and are waited for together: a run's start (a dozen
    # Python processes enrolling and measuring a warm-up round) never overlaps another run's
    # scored rounds, whose probes would time out on a starved CPU. Batches of runs of about
    # the same length and size, the longest first.
    def size(n: str) -> tuple[int, int]:
        s = load_scenario(BUILTIN_DIR / f"{n}.yaml")
        return (-round(s.rounds * s.round_seconds), -sum(i.agents for i in s.isps))

    queue = sorted(shipped, key=lambda n: (*size(n), n))
    batches: list[list[str]] = []
    for name in queue:  # at most AT_ONCE runs, or one more small one, under AGENTS_AT_ONCE
        agents = -size(name)[1]
        last = batches[-1] if batches else []
        total = sum(-size(n)[1] for n in last) + agents
        if last and total <= AGENTS_AT_ONCE and len(last) < AT_ONCE + (agents <= 6):
            last.append(name)
        else:
            batches.append([name])
    running: list[Run] = []
    homes: list[Path] = []
    results: dict[str, Outcome] = {}
    deadline = time.monotonic() + RUN_TIMEOUT_S * 2
    try:
        for batch in batches:
            running = [_start(name, workdir, homes) for name in batch]
            while running:
                for run in list(running):
                    if run.proc.poll() is not None:
                        results[run.name] = _finish(run)
                        running.remove(run)
                if time.monotonic() > deadline:
                    pytest.fail(f"lab runs did not finish: {[r.name for r in running]}")
                time.sleep(0.5)
        yield results
    finally:
        for run in running:
            run.proc.kill()
            run.proc.wait()
        for home in homes:
            shutil.rmtree(home, ignore_errors=True)


def _check(outcome: Outcome) -> dict[str, Any]:
    assert outcome.doc is not None, outcome.stderr[-3000:]
    return outcome.doc


def test_iran_2013_finds_the_leak_exactly(outcomes: dict[str, Outcome]) -> None:
    """The built-in scenario: every expected leak found, none false, windows within one round
    at each end, and at least 99% of verdicts right."""
    doc = _check(outcomes["iran-2013"])
    assert doc["expected"] == 2
    assert doc["found"] == doc["expected"]
    assert doc["false_leaks"] == 0
    for w in doc["window_error_rounds"]:
        assert abs(w["start"]) <= 1 and abs(w["end"]) <= 1, w
    assert doc["verdict_accuracy"] >= 0.99, doc["wrong_verdicts"]
    assert {e["network_name"] for e in doc["leaks"]} == {"Shatel"}
    assert doc["divergences_expected"] == 0 and doc["divergences_wrong"] == 0
    assert outcomes["iran-2013"].code == 0


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if n != "iran-2013"))
def test_shipped_scenario_meets_its_expected_outcome(
    outcomes: dict[str, Outcome], name: str
) -> None:
    """Each shipped scenario: the leaks, uncorroborated lapses and divergences its truth
    implies are what the collector reports, with no false leak, no wrong divergence and
    right verdicts."""
    doc = _check(outcomes[name])
    want = EXPECTED[name]
    assert (doc["expected"], doc["uncorroborated_expected"]) == (want.leaks, want.uncorroborated)
    assert sorted(d["kind"] for d in doc["expected_divergences"]) == list(want.divergences)
    assert doc["found"] == want.leaks, doc["missed_leaks"]
    assert doc["false_leaks"] == 0, doc["false_leak_events"]
    assert doc["uncorroborated_found"] == want.uncorroborated, doc["uncorroborated"]
    for w in doc["window_error_rounds"]:
        assert abs(w["start"]) <= want.window and abs(w["end"]) <= want.window, w
    assert doc["divergences_found"] == doc["divergences_expected"], doc["missed_divergences"]
    assert doc["divergences_wrong"] == 0, doc["wrong_divergences"]
    assert doc["verdict_accuracy"] >= 0.98, doc["wrong_verdicts"]
    assert outcomes[name].code == 0


def test_lab_runs_as_an_unprivileged_user(outcomes: dict[str, Outcome]) -> None:
    """The run made as uid 65534 (no capabilities; or as the unprivileged user running the
    tests) built its lab and scored like the others."""
    outcome = outcomes[UNPRIVILEGED]
    doc = _check(outcome)
    assert outcome.code == 0, outcome.stderr[-3000:]
    assert doc["measurements_scored"] > 0


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_found_leak_is_alerted_within_two_rounds(
    outcomes: dict[str, Outcome], name: str
) -> None:
    """The lab's webhook receiver got a signed leak.opened for every leak the collector
    found, within two rounds of the leak's true start, and no alert for anything else."""
    alerts = _check(outcomes[name])["alerts"]
    assert len(alerts["leaks"]) == _check(outcomes[name])["found"]
    for leak in alerts["leaks"]:
        assert leak["seconds_to_alert"] is not None, leak
        assert leak["rounds_to_alert"] <= 2, leak
    assert alerts["non_leak_alerts"] == []
    assert alerts["unsigned"] == 0
