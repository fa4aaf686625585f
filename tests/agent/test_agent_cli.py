"""``filterwatch agent enroll|status|run`` as a volunteer runs them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.state import Credentials, Status, lock_state_dir, save_credentials, save_status
from tests.agent.collector_double import AGENT_ID, TOKEN, CollectorDouble
from tests.commands import FILTERWATCH

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
ROOT = Path(__file__).resolve().parents[2]


async def filterwatch(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *FILTERWATCH,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_enroll_writes_private_credentials_and_a_config(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    """Enrolling stores the credentials readable by the volunteer only, and writes a
    configuration naming the collector and the state directory."""
    server = await aiohttp_server(CollectorDouble().app())
    url = str(server.make_url("")).rstrip("/")
    state, config = tmp_path / "state", tmp_path / "agent.yaml"
    code, out, _ = await filterwatch(
        "agent",
        "enroll",
        "--collector",
        url,
        "--code",
        "good-code",
        "--state-dir",
        str(state),
        "--config",
        str(config),
    )
    assert code == 0, out
    assert AGENT_ID in out and TOKEN not in out
    creds = state / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert json.loads(creds.read_text()) == {
        "agent_id": AGENT_ID,
        "token": TOKEN,
        "collector_url": url,
    }
    assert url in config.read_text() and str(state) in config.read_text()


async def test_enroll_with_a_bad_code_fails_and_writes_nothing(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    """A refused code exits 1 with the collector's reason and leaves no credentials."""
    server = await aiohttp_server(CollectorDouble().app())
    code, _, err = await filterwatch(
        "agent",
        "enroll",
        "--collector",
        str(server.make_url("")),
        "--code",
        "wrong",
        "--state-dir",
        str(tmp_path / "state"),
    )
    assert code == 1
    assert "bad_code" in err
    assert not (tmp_path / "state" / "credentials.json").exists()


async def test_enroll_with_a_bad_url_is_a_usage_error(tmp_path: Path) -> None:
    """A collector that is not an http(s) URL is refused before anything is sent."""
    code, _, err = await filterwatch(
        "agent", "enroll", "--collector", "ftp://x", "--code", "c", "--state-dir", str(tmp_path)
    )
    assert code == 2 and "--collector" in err


async def test_run_before_enrolling_says_what_to_do(tmp_path: Path) -> None:
    """Running an agent that was never enrolled exits 2 and names the enroll command."""
    code, _, err = await filterwatch("agent", "run", "--state-dir", str(tmp_path / "s"))
    assert code == 2 and "filterwatch agent enroll" in err


async def test_a_config_mistake_names_the_key(tmp_path: Path) -> None:
    """A wrong value in the configuration exits 2 naming the file and the key."""
    config = tmp_path / "agent.yaml"
    config.write_text("collector_url: http://127.0.0.1:9\nprobes: {timeout_s: ten}\n")
    code, _, err = await filterwatch("agent", "run", "--config", str(config))
    assert code == 2 and "probes.timeout_s" in err and str(config) in err


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("probes: {resolver: not-an-address}", "probes.resolver"),
        ("upload: {proxy: 'proxy.example:3128'}", "upload.proxy"),
        ("upload: {proxy: 'socks5://'}", "upload.proxy"),
    ],
)
async def test_a_bad_value_exits_2_naming_file_and_key(tmp_path: Path, line: str, key: str) -> None:
    """Issue 9: a resolver that is not an address, a URL without a scheme or host, exit 2
    with a message naming the file and the key, and no traceback."""
    config = tmp_path / "agent.yaml"
    config.write_text(f"collector_url: http://127.0.0.1:9\n{line}\n")
    code, _, err = await filterwatch("agent", "run", "--config", str(config))
    assert code == 2
    assert f"{config}: {key}: " in err
    assert "Traceback" not in err


async def test_status_shows_spool_uploads_errors_and_network(tmp_path: Path) -> None:
    """`agent status` shows what the agent last recorded and never the token."""
    state = tmp_path / "state"
    save_credentials(state, Credentials(AGENT_ID, TOKEN, "http://127.0.0.1:9"))
    save_status(
        state,
        Status(
            last_upload_at=1.0e9,
            last_error="upload: connect_failed",
            uploaded=42,
            network={"asn": 64500, "cc": "IR", "network_name": "Test ISP"},
        ),
    )
    code, out, _ = await filterwatch("agent", "status", "--state-dir", str(state), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["uploaded"] == 42 and doc["last_error"] == "upload: connect_failed"
    assert doc["network"]["asn"] == 64500 and doc["spool"]["results"] == 0
    code, out, _ = await filterwatch("agent", "status", "--state-dir", str(state))
    assert "AS64500" in out and "connect_failed" in out and "2001-09-09" in out
    assert TOKEN not in out


async def test_sigterm_stops_the_agent_even_while_the_collector_hangs(tmp_path: Path) -> None:
    """SIGTERM ends `agent run` cleanly (exit 0) within its grace even when the collector
    accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []
    connected = asyncio.Event()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # keep the connection open and say nothing
        connected.set()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    state = tmp_path / "state"
    save_credentials(state, Credentials(AGENT_ID, TOKEN, f"http://127.0.0.1:{port}"))
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"collector_url: http://127.0.0.1:{port}\nstate_dir: {state}\nshutdown_grace_s: 1\n"
        "logging: {json: true, level: info}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        *FILTERWATCH,
        "agent",
        "run",
        "--config",
        str(config),
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stderr is not None
    async with asyncio.timeout(30):
        while b"agent_started" not in await proc.stderr.readline():
            pass
        await connected.wait()  # the agent now waits for an answer that never comes
        proc.send_signal(signal.SIGTERM)
        rest = await proc.stderr.read()
        assert await proc.wait() == 0
    assert b"agent_stopped" in rest
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_second_agent_on_the_same_state_dir_refuses_to_run(tmp_path: Path) -> None:
    """Two agents sharing a state directory would measure everything twice: the second one
    exits 1 and says why."""
    state = tmp_path / "state"
    save_credentials(state, Credentials(AGENT_ID, TOKEN, "http://127.0.0.1:9"))
    fd = lock_state_dir(state)  # this test process plays the running agent
    try:
        code, _, err = await filterwatch("agent", "run", "--state-dir", str(state))
    finally:
        os.close(fd)
    assert code == 1 and "already running" in err
