"""The collector serves HTTPS itself (``listen.tls_cert``/``tls_key``): TLS 1.2 and later,
certificates reloaded on SIGHUP, agents verifying against ``upload.ca_file``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import trustme

from tests.commands import FILTERWATCH

ROOT = Path(__file__).resolve().parents[2]


def _env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "cfg"),
    }


def _issue(ca: trustme.CA, tmp: Path) -> tuple[Path, Path]:
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return cert, key


class Served:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def served(tmp_path: Path, ca: trustme.CA) -> Iterator[Served]:
    cert, key = _issue(ca, tmp_path)
    config = tmp_path / "collector.yaml"
    config.write_text(
        f"listen: {{tls_cert: {json.dumps(str(cert))}, tls_key: {json.dumps(str(key))}}}\n"
        f"database: {{sqlite_path: {json.dumps(str(tmp_path / 'c.sqlite3'))}}}\n"
        "logging: {json: true}\n"
    )
    with (
        open(tmp_path / "stderr.log", "w") as stderr,
        subprocess.Popen(
            [*FILTERWATCH, "collector", "serve", "--config", str(config), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=_env(tmp_path),
        ) as proc,
    ):
        assert proc.stdout is not None
        line = proc.stdout.readline()
        try:
            assert "listening on https://127.0.0.1:" in line, line
            yield Served(proc, line.rsplit(" ", 1)[-1].strip())
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


async def _status(url: str, ctx: ssl.SSLContext) -> int:
    async with aiohttp.ClientSession() as session, session.get(url, ssl=ctx) as resp:
        return resp.status


def _client(ca: trustme.CA | None, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if ca is not None:
        ca.configure_trust(ctx)
    if max_version is not None:
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = max_version
    return ctx


async def test_https_with_the_configured_certificate(served: Served, ca: trustme.CA) -> None:
    """A client trusting the CA gets /healthz over HTTPS; one trusting only the system's fails."""
    assert await _status(served.url + "/healthz", _client(ca)) == 200
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await _status(served.url + "/healthz", _client(None))


def _handshake(url: str, ca: trustme.CA, version: ssl.TLSVersion) -> str:
    """The TLS version a client offering only ``version`` gets, or the SSL error's reason."""
    host, port = url.removeprefix("https://").rsplit(":", 1)
    ctx = _client(ca)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer old versions at all
        ctx.minimum_version = version
        ctx.maximum_version = version
    try:
        with (
            socket.create_connection((host, int(port)), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname=host) as tls,
        ):
            return str(tls.version())
    except ssl.SSLError as exc:
        return str(exc.reason)


def test_tls_older_than_1_2_is_refused(served: Served, ca: trustme.CA) -> None:
    """A client offering only TLS 1.1 is refused by the server; TLS 1.2 and 1.3 get through."""
    old = _handshake(served.url, ca, ssl.TLSVersion.TLSv1_1)
    if old == "NO_PROTOCOLS_AVAILABLE":
        pytest.skip("this OpenSSL cannot offer TLS 1.1 even as a client: nothing to refuse")
    assert not old.startswith("TLSv")  # no handshake: the server alerts or hangs up
    assert _handshake(served.url, ca, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert _handshake(served.url, ca, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"


async def _until_logged(log: Path, event: str) -> None:
    """Wait (30 s at the most) until the collector's log names ``event``."""
    deadline = time.monotonic() + 30
    while event not in (text := await asyncio.to_thread(log.read_text)):
        assert time.monotonic() < deadline, text
        await asyncio.sleep(0.1)


async def test_sighup_reloads_a_renewed_certificate(served: Served, tmp_path: Path) -> None:
    """New files + SIGHUP: new connections get the new certificate, no restart."""
    renewed = trustme.CA()
    _issue(renewed, tmp_path)
    served.proc.send_signal(signal.SIGHUP)
    await _until_logged(tmp_path / "stderr.log", "tls_reloaded")
    assert await _status(served.url + "/healthz", _client(renewed)) == 200
    assert served.proc.poll() is None


async def test_sighup_with_a_broken_pair_keeps_serving(
    served: Served, ca: trustme.CA, tmp_path: Path
) -> None:
    """A renewal gone wrong (garbage key) is logged; the old certificate stays in service."""
    (tmp_path / "key.pem").write_text("not a key\n")
    served.proc.send_signal(signal.SIGHUP)
    await _until_logged(tmp_path / "stderr.log", "tls_reload_failed")
    assert await _status(served.url + "/healthz", _client(ca)) == 200


def _serve_exit(tmp_path: Path, listen: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "bad.yaml"
    config.write_text(f"listen: {listen}\n")
    return subprocess.run(
        [*FILTERWATCH, "collector", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=60,
    )


@pytest.mark.parametrize(
    ("listen", "said"),
    [
        # listen.tls_cert pointing nowhere: the file and the key are named
        (
            "{tls_cert: /nonexistent/cert.pem, tls_key: /nonexistent/k}",
            "bad.yaml: listen.tls_cert: /nonexistent/cert.pem: no such file",
        ),
        # tls_cert alone: both go together
        ("{tls_cert: cert.pem}", "tls_cert: goes with tls_key"),
    ],
    ids=["missing-certificate-file", "certificate-without-key"],
)
def test_unusable_tls_settings_are_a_config_error(tmp_path: Path, listen: str, said: str) -> None:
    """TLS settings serve cannot use: exit 2, and the error says which and why."""
    done = _serve_exit(tmp_path, listen)
    assert done.returncode == 2
    assert said in done.stderr


def test_agent_verifies_against_upload_ca_file(
    served: Served, ca: trustme.CA, tmp_path: Path
) -> None:
    """`agent enroll` over HTTPS: refused without the CA, enrolled with upload.ca_file."""
    db = tmp_path / "c.sqlite3"
    code = subprocess.run(
        [*FILTERWATCH, "collector", "enroll-code", "--uses", "2"],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        cwd=tmp_path,
        timeout=60,
    )
    assert code.returncode == 0, code.stderr
    # The served collector uses c.sqlite3; enroll-code wrote ./filterwatch.sqlite3: use that one.
    cfg = tmp_path / "collector.yaml"
    assert db.exists() and cfg.exists()
    code = subprocess.run(
        [*FILTERWATCH, "collector", "enroll-code", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=60,
    )
    assert code.returncode == 0, code.stderr

    def enroll(config: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *FILTERWATCH,
                "agent",
                "enroll",
                "--collector",
                served.url,
                "--code",
                code.stdout.strip(),
                "--config",
                str(config),
            ],
            capture_output=True,
            text=True,
            env=_env(tmp_path),
            timeout=60,
        )

    untrusting = tmp_path / "untrusting.yaml"
    untrusting.write_text(f"collector_url: {served.url}\n")
    refused = enroll(untrusting)
    assert refused.returncode == 1
    assert "enrollment failed" in refused.stderr
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    trusting = tmp_path / "trusting.yaml"
    trusting.write_text(
        f"collector_url: {served.url}\nupload: {{ca_file: {json.dumps(str(ca_file))}}}\n"
    )
    accepted = enroll(trusting)
    assert accepted.returncode == 0, accepted.stderr
    assert "enrolled as agent" in accepted.stdout
