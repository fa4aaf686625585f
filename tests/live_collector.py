"""A live collector for black-box tests and benchmarks: ``filterwatch collector serve`` in a
subprocess on 127.0.0.1, a SQLite store in a temporary directory, its log in a file.

Used by the fuzz suite, the schemathesis run, the log-privacy tests and ``bench/fuzz``:
they talk to it over real sockets, the way an agent, an analyst or an attacker would.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack

from tests.commands import FILTERWATCH

ROOT = Path(__file__).resolve().parents[1]
ANALYST_TOKEN = "fw-analyst-live-collector-test-token-000000000001"
_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


@dataclass
class LiveCollector:
    """A running collector: its URL, files and process."""

    directory: Path
    config_path: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database(self) -> Path:
        return self.directory / "collector.sqlite3"

    def alive(self) -> bool:
        if self.process.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 2):
            return True
        return False

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def enroll(self) -> tuple[str, str]:
        """A new agent: (agent_id, token), through a code made by the collector's CLI."""
        return self.enroll_many(1)[0]

    def enroll_many(self, count: int) -> list[tuple[str, str]]:
        """``count`` new agents with one code of ``count`` uses (one CLI run)."""
        code = self.cli("enroll-code", "--uses", str(count)).strip().splitlines()[-1].strip()
        body = json.dumps({"code": code}).encode()
        agents = []
        for _ in range(count):
            status, answer = request(self.port, "POST", "/api/v1/enroll", body, "application/json")
            assert status == 200, answer
            doc = json.loads(answer)
            agents.append((doc["agent_id"], doc["token"]))
        return agents

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*FILTERWATCH, "collector", *args, "--config", str(self.config_path)],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=180,
        )
        return done.stdout.decode()

    def stored(self) -> int:
        import sqlite3

        with contextlib.closing(sqlite3.connect(self.database)) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM measurements").fetchone()[0])


def request(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    content_type: str | None = None,
    token: str | None = None,
    timeout: float = 30,
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a fresh connection (http.client: no pooling surprises)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def write_config(directory: Path, extra: str = "") -> Path:
    path = directory / "collector.yaml"
    path.write_text(
        "database: {sqlite_path: " + json.dumps(str(directory / "collector.sqlite3")) + "}\n"
        f"analyst_tokens: [{ANALYST_TOKEN}]\n"
        "logging: {json: true, level: info}\n" + extra
    )
    return path


@contextlib.contextmanager
def live_collector(directory: Path, extra_config: str = "") -> Iterator[LiveCollector]:
    """Start a collector in ``directory`` and stop it (SIGTERM) afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    config_path = write_config(directory, extra_config)
    log_path = directory / "collector.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                *FILTERWATCH,
                "collector",
                "serve",
                "--config",
                str(config_path),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            port = _wait_for_port(process)
            yield LiveCollector(directory, config_path, log_path, process, port)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stdout is not None:
                process.stdout.close()


def _wait_for_port(process: subprocess.Popen[bytes]) -> int:
    assert process.stdout is not None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = process.stdout.readline().decode()
        if not line and process.poll() is not None:
            raise RuntimeError(f"the collector exited with {process.returncode} before listening")
        match = _LISTENING.search(line)
        if match:
            return int(match.group(1))
    raise RuntimeError("the collector did not start listening within 180 s")


def msgpack_batch(agent_id: str, results: list[object], batch_id: str = "b-1") -> bytes:
    doc = {"schema_version": 1, "agent_id": agent_id, "batch_id": batch_id, "results": results}
    return msgpack.packb(doc, use_bin_type=True)  # type: ignore[no-any-return]
