"""``filterwatch demo`` and ``filterwatch lab run SCENARIO.yaml [--json] [--keep]``.

This side runs in the host's namespaces and only prepares: it checks the scenario and the
prerequisites, makes a run directory, and starts the inner orchestrator
(``lab.orchestrator``) in the lab's own user, network, mount and PID namespaces. When
the orchestrator ends, for any reason, nothing of the lab is left running; this side then
removes the run directory unless ``--keep`` was given.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from lab.netns import check_prerequisites, sandbox_command, set_parent_death_signal, tool_path
from lab.scenario import builtin_scenario_path, load_scenario

INTERRUPT_GRACE_S = 15.0


def register(sub: Any) -> None:
    d: argparse.ArgumentParser = sub.add_parser(
        "demo", help="run the Iran 2013 lab scenario and say which ISP leaked"
    )
    _common(d)
    d.set_defaults(handler=cmd_demo)
    lab = sub.add_parser("lab", help="the censorship lab")
    cmds = lab.add_subparsers(dest="command", metavar="COMMAND")
    run = cmds.add_parser("run", help="run a lab scenario and score the collector's findings")
    run.add_argument("scenario", type=Path, metavar="SCENARIO.yaml")
    _common(run)
    run.set_defaults(handler=cmd_run)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--keep", action="store_true", help="keep the collector's database and the logs")


def cmd_demo(args: argparse.Namespace) -> int:
    return run_scenario(
        builtin_scenario_path("iran-2013"), json=args.json, keep=args.keep, demo=True
    )


def cmd_run(args: argparse.Namespace) -> int:
    return run_scenario(args.scenario, json=args.json, keep=args.keep, demo=False)


def run_scenario(path: Path, *, json: bool, keep: bool, demo: bool) -> int:
    """Check, then run the scenario at ``path`` in the sandbox; the orchestrator's exit code."""
    scenario = load_scenario(path)  # ConfigError: exit 2 with the file and key
    problems = check_prerequisites()
    if problems:
        print("filterwatch lab: the lab cannot run on this machine:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    run_dir = Path(tempfile.mkdtemp(prefix=f"filterwatch-lab-{scenario.name}-"))
    os.chmod(run_dir, 0o755)
    inner = [
        sys.executable,
        "-m",
        "lab.orchestrator",
        "--run-dir",
        str(run_dir),
        "--scenario",
        str(path.resolve()),
    ]
    inner += ["--json"] if json else []
    inner += ["--keep"] if keep else []
    inner += ["--demo"] if demo else []
    env = {**os.environ, "PATH": tool_path()}
    if not demo and not json:
        print(f"filterwatch lab: running {scenario.name} in {run_dir}", file=sys.stderr)
    proc = subprocess.Popen(sandbox_command(inner), env=env, preexec_fn=set_parent_death_signal)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        code = _interrupt(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
        if keep:
            if json:
                pass  # the JSON document names the run directory
            else:
                print(f"filterwatch lab: kept {run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    return code


def _interrupt(proc: subprocess.Popen[bytes]) -> int:
    """Ctrl-C: the orchestrator got it too and stops the lab; give it time, then kill."""
    try:
        try:
            proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            # The signal came to this process alone (not from a terminal): pass it on.
            for pid in _children(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGINT)
            proc.wait(timeout=INTERRUPT_GRACE_S)
    except (KeyboardInterrupt, subprocess.TimeoutExpired):
        pass
    if proc.returncode is None:
        # Killing unshare kills the orchestrator (--kill-child) and with it the whole
        # PID namespace: every agent, the collector, every namespace.
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    print("filterwatch lab: interrupted; the lab is gone", file=sys.stderr)
    return 130


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]
