"""The lab's real programs: one ``filterwatch collector`` and a ``filterwatch agent`` each.

Every program runs as its own process in its namespace, started the way an operator and
volunteers start it (``collector serve``, ``collector enroll-code``, ``agent enroll``,
``agent run``). What the collector stored is read through its store's public interface,
opened read-only, and its findings through ``collector leaks --json``, as an analyst
would: the lab never looks at the collector's tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from agent.state import load_credentials, load_status
from collector.filters import Filters
from collector.store.base import StoredVerdict
from collector.store.sqlite import SqliteStore
from lab import report
from lab.netns import LabError, tool_path
from lab.network import LabNetwork
from lab.plan import COLLECTOR_ADDRESS, COLLECTOR_PORT, INTERNET_NS, PUBLIC_RESOLVER, AgentPlan
from lab.scenario import Scenario

READY_TIMEOUT_S = 60.0


class RunPaths:
    """Where one run keeps its files, all below ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.logs = root / "logs"
        self.home = root / "home"  # HOME, XDG dirs and TMPDIR of every program started
        self.collector = root / "collector"
        self.collector_config = self.collector / "collector.yaml"
        self.database = self.collector / "filterwatch.sqlite3"
        self.ca_file = self.collector / "lab-ca.pem"  # written by lab.servers.make_tls
        self.agents = root / "agents"
        self.result = root / "result.json"

    def make(self) -> None:
        for d in (self.logs, self.collector, self.agents, self.home):
            d.mkdir(parents=True, exist_ok=True)

    def agent_dir(self, agent: AgentPlan) -> Path:
        return self.agents / agent.name.replace("/", "-").replace(" ", "_")


class Launcher:
    """Runs ``python -m filterwatch`` commands in the lab's namespaces."""

    def __init__(self, network: LabNetwork, paths: RunPaths) -> None:
        self.network = network
        self.paths = paths

    def _env(self) -> dict[str, str]:
        home = self.paths.home
        # Only what the programs need: nothing of the caller's environment leaks into the
        # lab but the interpreter's module path, when one is set.
        extra = {k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}
        return {
            **extra,
            "PATH": tool_path(),
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"),
            "TMPDIR": str(home),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    async def _exec(
        self, netns: str, args: Sequence[str], output: IO[bytes] | int
    ) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *self.network.ns.exec_prefix(netns),
            sys.executable,
            "-m",
            "filterwatch",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            env=self._env(),
            start_new_session=True,
        )

    async def start(
        self, netns: str, args: Sequence[str], log_name: str
    ) -> asyncio.subprocess.Process:
        """Start a program that keeps running; its output goes to ``logs/<log_name>``."""
        # A small local file, opened once per process start: handed to the child as is.
        log = open(self.paths.logs / log_name, "ab")  # noqa: SIM115, ASYNC230
        try:
            return await self._exec(netns, args, log)
        finally:
            log.close()

    async def run(self, netns: str, args: Sequence[str], what: str) -> str:
        """Run one command to completion in ``netns``; its standard output."""
        proc = await self._exec(netns, args, asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise LabError(
                f"{what} failed (exit {proc.returncode}): "
                + err.decode(errors="replace").strip()[-2000:]
            )
        return out.decode()


class LabCollector:
    """The lab's collector, in the lab's internet, on its own SQLite file."""

    url = f"http://{COLLECTOR_ADDRESS}:{COLLECTOR_PORT}"

    def __init__(
        self,
        launcher: Launcher,
        paths: RunPaths,
        scenario: Scenario,
        progress: Callable[[str], None],
    ) -> None:
        self.launcher = launcher
        self.paths = paths
        self.scenario = scenario
        self.progress = progress
        self.process: asyncio.subprocess.Process | None = None
        self._store: SqliteStore | None = None

    def write_files(self, *, timeout_s: float, alerting: dict[str, Any]) -> None:
        """The collector's configuration, IP-to-ASN table and target list."""
        c = self.paths.collector
        (c / "netdb.tsv").write_text(self.launcher.network.plan.netdb_tsv())
        targets = {self.scenario.country: [s.url for s in self.scenario.sites]}
        (c / "targets.yaml").write_text(json.dumps(targets, indent=2) + "\n")
        config = {
            "listen": {"host": COLLECTOR_ADDRESS, "port": COLLECTOR_PORT},
            "database": {"sqlite_path": str(self.paths.database)},
            "netdb_path": str(c / "netdb.tsv"),
            "targets_path": str(c / "targets.yaml"),
            "control": {
                "resolver": PUBLIC_RESOLVER,
                "ca_file": str(self.paths.ca_file),
                "timeout_s": timeout_s,
            },
            "logging": {"json": True, "level": "info"},
            **alerting,
        }
        self.paths.collector_config.write_text(json.dumps(config, indent=2) + "\n")

    async def start(self, *, timeout_s: float, alerting: dict[str, Any]) -> None:
        """``collector serve`` until it answers /healthz; then its store, read-only."""
        self.write_files(timeout_s=timeout_s, alerting=alerting)
        log = self.paths.logs / "collector.log"
        self.process = await self.launcher.start(
            INTERNET_NS,
            ["collector", "serve", "--config", str(self.paths.collector_config)],
            log.name,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise LabError(f"the collector exited at start; see {log}")
            if await self._healthy():
                self._store = SqliteStore(self.paths.database, readonly=True)
                await self._store.open()
                self.progress(f"collector up (SQLite {self.paths.database.name})")
                return
            await asyncio.sleep(0.2)
        raise LabError(f"the collector did not answer /healthz within 30s; see {log}")

    async def _healthy(self) -> bool:
        ns = self.launcher.network.ns
        loop = asyncio.get_running_loop()
        sock = ns.make_socket(INTERNET_NS)
        try:
            async with asyncio.timeout(2):
                await loop.sock_connect(sock, (COLLECTOR_ADDRESS, COLLECTOR_PORT))
                await loop.sock_sendall(sock, b"GET /healthz HTTP/1.0\r\nHost: collector\r\n\r\n")
                answer = await loop.sock_recv(sock, 256)
            return answer.startswith(b"HTTP/1.") and b" 200 " in answer.split(b"\r\n", 1)[0] + b" "
        except (OSError, TimeoutError):
            return False
        finally:
            sock.close()

    async def _command(self, name: str, *args: str) -> str:
        """``filterwatch collector <name> --config ... <args>``: its standard output."""
        return await self.launcher.run(
            INTERNET_NS,
            ["collector", name, "--config", str(self.paths.collector_config), *args],
            f"collector {name}",
        )

    async def enroll_code(self, uses: int) -> str:
        """One enrollment code for the scenario's country, good for ``uses`` agents."""
        out = await self._command(
            "enroll-code",
            "--country",
            self.scenario.country,
            "--uses",
            str(uses),
            "--expires",
            "1h",
        )
        return out.strip().splitlines()[0].strip()

    async def verdicts(self, since: float, until: float) -> list[StoredVerdict]:
        """Every stored measurement made in [since, until), in time order."""
        if self._store is None:
            raise LabError("the collector is not started")
        return await self._store.verdicts(Filters(since=since, until=until))

    async def leaks(self, since: float, until: float) -> dict[str, Any]:
        """The collector's answer to ``filterwatch collector leaks --json`` for the run."""
        out = await self._command(
            "leaks",
            "--json",
            "--bucket",
            f"{self.scenario.round_seconds:g}s",
            "--since",
            report.iso(since),
            "--until",
            report.iso(until),
            "--cc",
            self.scenario.country,
        )
        doc = json.loads(out)
        if not isinstance(doc, dict):
            raise LabError("collector leaks --json did not print a JSON object")
        return doc

    async def stop(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None
        if self.process is not None:
            await stop_all([self.process])


class LabAgents:
    """The lab's volunteers: one ``filterwatch agent`` in each agent's namespace."""

    def __init__(
        self,
        launcher: Launcher,
        paths: RunPaths,
        progress: Callable[[str], None],
        *,
        interval_s: float,
        jitter_s: float,
        timeout_s: float,
    ) -> None:
        self.launcher = launcher
        self.paths = paths
        self.progress = progress
        self.plans = launcher.network.plan.agents
        self.interval_s = interval_s
        self.jitter_s = jitter_s
        self.timeout_s = timeout_s
        self.processes: dict[AgentPlan, asyncio.subprocess.Process] = {}
        self.by_id: dict[str, AgentPlan] = {}  # filled by enroll()

    def config(self, agent: AgentPlan) -> dict[str, Any]:
        """The agent's ``agent.yaml``."""
        return {
            "collector_url": LabCollector.url,
            "state_dir": str(self.paths.agent_dir(agent)),
            "interval_s": self.interval_s,
            "jitter_s": self.jitter_s,
            "shutdown_grace_s": 2,
            "probes": {
                "timeout_s": self.timeout_s,
                "resolver": agent.resolver,
                "system_resolver": False,
                "ca_file": str(self.paths.ca_file),
            },
            "logging": {"json": True, "level": "info"},
        }

    async def enroll(self, code: str) -> None:
        """Each agent trades ``code`` for its credentials from its own network."""
        limit = asyncio.Semaphore(4)

        async def enroll(agent: AgentPlan) -> None:
            directory = self.paths.agent_dir(agent)
            directory.mkdir(parents=True, exist_ok=True)
            config = directory / "agent.yaml"
            config.write_text(json.dumps(self.config(agent), indent=2) + "\n")
            async with limit:
                await self.launcher.run(
                    agent.netns,
                    [
                        "agent",
                        "enroll",
                        "--collector",
                        LabCollector.url,
                        "--code",
                        code,
                        "--config",
                        str(config),
                        "--state-dir",
                        str(directory),
                    ],
                    f"agent enroll ({agent.name})",
                )

        await asyncio.gather(*(enroll(a) for a in self.plans))
        for agent in self.plans:
            self.by_id[load_credentials(self.paths.agent_dir(agent)).agent_id] = agent
        self.progress(f"enrolled {len(self.plans)} agents with one code, as volunteers do")

    async def start(self) -> None:
        """``agent run`` for every agent, until each has measured and uploaded once."""
        for agent in self.plans:
            directory = self.paths.agent_dir(agent)
            self.processes[agent] = await self.launcher.start(
                agent.netns,
                ["agent", "run", "--config", str(directory / "agent.yaml")],
                f"agent-{directory.name}.log",
            )
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        """Until every agent has measured and uploaded once (its status file says so)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        pending = set(self.processes)
        while pending:
            for agent in list(pending):
                proc = self.processes[agent]
                if proc.returncode is not None:
                    raise LabError(
                        f"agent {agent.name} exited (status {proc.returncode}); "
                        f"see {self.paths.logs}"
                    )
                status = await asyncio.to_thread(load_status, self.paths.agent_dir(agent))
                if status.last_upload_at is not None:
                    pending.discard(agent)
            if not pending:
                break
            if time.monotonic() > deadline:
                raise LabError(
                    f"agents {', '.join(sorted(a.name for a in pending))} did not upload "
                    f"within {READY_TIMEOUT_S:.0f}s; "
                    f"see {self.paths.logs}"
                )
            await asyncio.sleep(0.25)
        self.progress(f"all {len(self.processes)} agents measured and uploaded a warm-up round")

    async def stop(self) -> None:
        await stop_all(list(self.processes.values()))


async def stop_all(procs: list[asyncio.subprocess.Process], grace_s: float = 5.0) -> None:
    """SIGTERM to each live process; SIGKILL to those still running after ``grace_s``."""
    live = [p for p in procs if p.returncode is None]
    for p in live:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(grace_s):
            await asyncio.gather(*(p.wait() for p in live))
    except TimeoutError:
        for p in live:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
        await asyncio.gather(*(p.wait() for p in live))
