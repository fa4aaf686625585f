"""deploy/proxy/nginx.conf as shipped (only paths and ports changed) in front of a real
collector: HTTPS with a trustme certificate, enrollment and a batch upload through it, and
the caller's network passed on with X-Forwarded-For (listen.trusted_proxies)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import trustme

from bench.fleet import free_port
from shared.codec import encode
from tests.collector.conftest import batch, record
from tests.commands import FILTERWATCH
from tests.conftest import skip_or_fail_in_ci

ROOT = Path(__file__).resolve().parents[1]
NGINX = ROOT / "deploy" / "proxy" / "nginx.conf"


def nginx_config(tmp: Path, listen: int, upstream: int, cert: Path, key: Path) -> Path:
    """The shipped site inside a minimal main configuration that runs from ``tmp``."""
    site = NGINX.read_text()
    site = re.sub(r"(?m)^    listen \[::\]:443.*\n", "", site)
    site = re.sub(r"(?m)^    listen 443 ssl", f"    listen 127.0.0.1:{listen} ssl", site)
    site = site.replace("server 127.0.0.1:8470;", f"server 127.0.0.1:{upstream};")
    site = re.sub(r"(?m)^    ssl_certificate .*$", f"    ssl_certificate {cert};", site)
    site = re.sub(r"(?m)^    ssl_certificate_key .*$", f"    ssl_certificate_key {key};", site)
    (tmp / "site.conf").write_text(site)
    main = tmp / "nginx.conf"
    main.write_text(
        f"daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\n"
        + ("user root;\n" if os.geteuid() == 0 else "")
        + "events {}\nhttp {\n"
        + "".join(
            f"    {kind}_temp_path {tmp}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + f"    include {tmp}/site.conf;\n}}\n"
    )
    return main


def _netdb(path: Path) -> Path:
    """127.0.0.1 (nginx, as the collector sees it) and the rest of 127/8 in different ASes."""
    path.write_text(
        "127.0.0.0\t127.0.0.1\t64500\tIR\tPROXY-AS\n"
        "127.0.0.2\t127.255.255.255\t64501\tIR\tVOLUNTEER-AS\n"
    )
    return path


async def _wait_up(url: str, ctx: ssl.SSLContext | None = None) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(150):
            try:
                async with session.get(url + "/healthz", ssl=ctx or False) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"{url} never answered")


@dataclass
class Launched:
    collector: subprocess.Popen[bytes]
    nginx: subprocess.Popen[bytes]
    upstream: int
    listen: int
    ctx: ssl.SSLContext
    code: str


def _launch(tmp_path: Path) -> Launched:
    """A collector (SQLite) on one port and the shipped nginx site on another."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        skip_or_fail_in_ci("nginx is not installed (Debian package nginx-light; scripts/setup)")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    upstream, listen = free_port(), free_port()
    config = tmp_path / "collector.yaml"
    config.write_text(
        f"listen: {{port: {upstream}, trusted_proxies: [127.0.0.1/32]}}\n"
        f"database: {{sqlite_path: '{tmp_path / 'c.sqlite3'}'}}\n"
        f"netdb_path: '{_netdb(tmp_path / 'netdb.tsv')}'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    fw = [*FILTERWATCH, "collector"]
    made = subprocess.run(
        [*fw, "enroll-code", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    main = nginx_config(tmp_path, listen, upstream, cert, key)
    with (
        open(tmp_path / "collector.log", "wb") as clog,
        open(tmp_path / "nginx.out", "wb") as nlog,
    ):
        collector = subprocess.Popen(
            [*fw, "serve", "--config", str(config)], stdout=clog, stderr=clog, env=env
        )
        nginx = subprocess.Popen(
            [binary, "-c", str(main), "-p", str(tmp_path)], stdout=nlog, stderr=nlog
        )
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return Launched(collector, nginx, upstream, listen, ctx, made.stdout.strip())


@pytest.fixture
async def behind_nginx(tmp_path: Path) -> AsyncIterator[tuple[str, ssl.SSLContext, str]]:
    up = await asyncio.to_thread(_launch, tmp_path)  # waits for `enroll-code`: off the loop
    try:
        await _wait_up(f"http://127.0.0.1:{up.upstream}")
        await _wait_up(f"https://127.0.0.1:{up.listen}", up.ctx)
        yield f"https://127.0.0.1:{up.listen}", up.ctx, up.code
    finally:
        for proc in (up.nginx, up.collector):
            proc.terminate()
            await asyncio.to_thread(proc.wait, 30)


async def test_nginx_config_serves_the_collector_over_https(
    behind_nginx: tuple[str, ssl.SSLContext, str],
) -> None:
    """Through nginx: enroll, whoami (the caller's network, forwarded), upload a batch."""
    url, ctx, code = behind_nginx
    # The volunteer connects from 127.0.0.2; nginx reaches the collector from 127.0.0.1.
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(url + "/api/v1/enroll", json={"code": code}, ssl=ctx) as resp:
            assert resp.status == 200, await resp.text()
            creds = await resp.json()
        headers = {"Authorization": f"Bearer {creds['token']}"}
        async with session.get(url + "/api/v1/whoami", headers=headers, ssl=ctx) as resp:
            assert resp.status == 200
            assert (await resp.json())["asn"] == 64501  # the volunteer's, not nginx's
        body = encode(batch(creds["agent_id"], [record(i) for i in range(50)]))
        async with session.post(
            url + "/api/v1/batches",
            data=body,
            headers={
                **headers,
                "Content-Type": "application/vnd.msgpack",
                "Accept": "application/json",
            },
            ssl=ctx,
        ) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["accepted"] == 50
