"""``filterwatch collector`` commands: config errors, codes, tokens, revocation, serve."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from collector.auth import hash_secret
from collector.server import GC_THRESHOLDS, tune_gc
from collector.store.sqlite import SqliteStore
from filterwatch.cli import main
from tests.commands import FILTERWATCH


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "collector.yaml"
    path.write_text(f"database: {{sqlite_path: {tmp_path / 'c.sqlite3'}}}\n{extra}")
    return path


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("listen: {host: 127.0.0.1, prot: 1}\n", "listen.prot"),
        ("limits: {max_body_bytes: lots}\n", "limits.max_body_bytes"),
        ("analyst_tokens: secret\n", "analyst_tokens"),
        ("colour: blue\n", "colour"),
        ("control: {resolver: not-an-address}\n", "control.resolver"),  # was <config>
        ("control: {allow_ports: [70000]}\n", "control.allow_ports"),
        ("limits: {max_uploads_per_agent: 0}\n", "limits.max_uploads_per_agent"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "enroll-code", "analyst-token"])
def test_config_errors_name_key_and_file(
    tmp_path: Path, capsys: Any, command: str, text: str, key: str
) -> None:
    """A wrong key or type stops the command with exit 2, naming the file and the key."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["collector", command, "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: {key}:" in err


def test_missing_netdb_file_is_a_config_error(tmp_path: Path, capsys: Any) -> None:
    """A netdb_path that does not exist is reported by key before anything starts."""
    path = _config(tmp_path, f"netdb_path: {tmp_path / 'nope.tsv'}\n")
    assert main(["collector", "serve", "--config", str(path)]) == 2
    assert "netdb_path" in capsys.readouterr().err


def test_bad_flags_exit_2(tmp_path: Path, capsys: Any) -> None:
    """A malformed --country or --expires is bad usage."""
    path = _config(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["collector", "enroll-code", "--config", str(path), "--country", "IRN"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["collector", "enroll-code", "--config", str(path), "--expires", "soon"])


async def _count_agents(db: Path, token: str | None = None) -> Any:
    store = SqliteStore(db)
    await store.open()
    try:
        if token is None:
            return await store.run_read(
                lambda c: c.execute("SELECT COUNT(*) FROM enroll_codes").fetchone()[0]
            )
        return await store.analyst_token_exists(hash_secret(token))
    finally:
        await store.close()


def test_enroll_code_and_analyst_token_are_stored_hashed(tmp_path: Path, capsys: Any) -> None:
    """enroll-code prints a code and analyst-token a token; the store keeps only hashes."""
    path = _config(tmp_path)
    assert (
        main(["collector", "enroll-code", "--config", str(path), "--country", "ir", "--uses", "3"])
        == 0
    )
    code = capsys.readouterr().out.strip()
    assert len(code) == 29
    assert main(["collector", "analyst-token", "--config", str(path)]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("fwa_")
    db = tmp_path / "c.sqlite3"
    assert asyncio.run(_count_agents(db)) == 1
    assert asyncio.run(_count_agents(db, token)) is True
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("c.sqlite3"))
    assert code.encode() not in raw and token.encode() not in raw


def test_revoke_unknown_agent_fails(tmp_path: Path, capsys: Any) -> None:
    """Revoking an agent the store does not know exits 1 and says so."""
    path = _config(tmp_path)
    assert main(["collector", "revoke-agent", "--config", str(path), "ag-nobody"]) == 1
    assert "ag-nobody" in capsys.readouterr().err


async def test_serve_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`collector serve --port 0` prints where it listens, answers /healthz, stops on SIGTERM."""
    path = _config(tmp_path, "logging: {json: true}\n")
    proc = await asyncio.create_subprocess_exec(
        *FILTERWATCH,
        "collector",
        "serve",
        "--config",
        str(path),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert "listening on http://127.0.0.1:" in line
        url = line.rsplit(" ", 1)[-1].strip()
        async with aiohttp.ClientSession() as session, session.get(url + "/healthz") as resp:
            assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0
    assert (tmp_path / "c.sqlite3").exists()


def test_a_serving_collector_freezes_its_start_and_collects_young_objects_rarely() -> None:
    """``tune_gc`` (``collector serve`` runs it once started) freezes what the process has
    loaded out of every later collection and sets the collector's thresholds."""
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
