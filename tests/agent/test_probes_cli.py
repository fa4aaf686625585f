"""``filterwatch agent probe URL``: one measurement now, explained, against loopback servers
and (when enrolled) a real collector that serves the control and the network identity."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from collector.app import make_app
from collector.auth import hash_enroll_code
from collector.config import CollectorConfig, ControlConfig, DatabaseConfig
from collector.state import STORE
from filterwatch.cli import main
from shared.codec import encode
from shared.schema import decode_measurement
from tests.servers import DnsResponder, HttpSite, Page, html_page, serve_http, start_dns

IRAN_BLOCKPAGE = (
    '<html><body><iframe src="http://10.10.34.34?type=Invalid Site"></iframe></body></html>'
)


@pytest.fixture
async def dns_server() -> AsyncIterator[DnsResponder]:
    server = await start_dns()
    yield server
    server.close()


def agent_config(path: Path, dns: DnsResponder, collector_url: str, state_dir: Path) -> Path:
    path.write_text(
        f"collector_url: {collector_url}\n"
        f"state_dir: {state_dir}\n"
        "probes:\n"
        "  timeout_s: 3\n"
        f"  resolver: '{dns.address}'\n"
        "  system_resolver: false\n"
    )
    return path


def plain_site_unenrolled(dns: DnsResponder, tmp_path: Path) -> tuple[HttpSite, Path]:
    """site.test (127.0.0.1) serving a plain page, and an agent's configuration that names
    no collector it is enrolled with."""
    dns.answer("site.test", "127.0.0.1")
    site = HttpSite()
    site.set("*", Page(body=html_page("Plain Site Home")))
    config = agent_config(tmp_path / "agent.yaml", dns, "http://collector.test", tmp_path / "state")
    return site, config


async def run_cli(*argv: str) -> int:
    # The command runs its own event loop: give it a thread, and keep serving on ours.
    return await asyncio.to_thread(main, list(argv))


async def test_probe_without_enrollment_measures_and_says_why_inconclusive(
    tmp_path: Path, dns_server: DnsResponder, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not enrolled: the URL is measured, each step is explained, and the verdict is
    inconclusive for lack of a control."""
    site, config = plain_site_unenrolled(dns_server, tmp_path)
    async with serve_http(site.app) as port:
        code = await run_cli("agent", "probe", f"http://site.test:{port}/", "--config", str(config))
    out = capsys.readouterr().out
    assert code == 0
    assert "answer: 127.0.0.1 (TTL 60)" in out
    assert "GET -> 200" in out and "Plain Site Home" in out
    assert "Verdict  inconclusive" in out
    assert "not enrolled" in out


async def test_probe_json_prints_a_valid_measurement(
    tmp_path: Path, dns_server: DnsResponder, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json prints one measurement record that passes the wire schema."""
    site, config = plain_site_unenrolled(dns_server, tmp_path)
    async with serve_http(site.app) as port:
        code = await run_cli(
            "agent", "probe", f"http://site.test:{port}/", "--json", "--config", str(config)
        )
    record = json.loads(capsys.readouterr().out)
    assert code == 0
    m = decode_measurement(encode(record))
    assert m.http is not None and m.http["status"] == 200 and m.blocking.value == "inconclusive"


async def test_probe_refuses_a_url_it_cannot_measure(capsys: pytest.CaptureFixture[str]) -> None:
    """A URL that is not http(s) is a usage error (exit 2) that says why."""
    code = await run_cli("agent", "probe", "ftp://site.test/file")
    assert code == 2
    assert "only http:// and https://" in capsys.readouterr().err


async def test_enrolled_probe_uses_the_collectors_control_and_network(
    tmp_path: Path, dns_server: DnsResponder, capsys: pytest.CaptureFixture[str]
) -> None:
    """Enrolled: the collector's control and whoami are used; a blockpage served to the
    agent (and not to the control) is reported as such, with exit code 1."""
    dns_server.answer("news.test", "127.0.0.1")
    netdb = tmp_path / "ip2asn.tsv"
    netdb.write_text("127.0.0.0\t127.255.255.255\t58224\tIR\tTCI Loopback\n")
    site = HttpSite()
    # The control asks first and gets the real page; the agent then gets the blockpage.
    site.script("*", Page(body=html_page("News Front Page")), Page(status=403, body=IRAN_BLOCKPAGE))
    state = tmp_path / "state"
    async with serve_http(site.app) as site_port:
        collector_config = CollectorConfig(
            database=DatabaseConfig(sqlite_path=tmp_path / "collector.sqlite3"),
            netdb_path=netdb,
            control=ControlConfig(
                allow_ranges=("127.0.0.0/8",),
                allow_ports=(site_port,),
                resolver=dns_server.address,
                timeout_s=3.0,
            ),
        )
        app = make_app(collector_config)
        async with serve_http(app) as collector_port:
            collector_url = f"http://127.0.0.1:{collector_port}"
            await app[STORE].add_enroll_code(hash_enroll_code("LOOPBACK-CODE-1"), None, 1, None)
            enrolled = await run_cli(
                "agent",
                "enroll",
                "--collector",
                collector_url,
                "--code",
                "LOOPBACK-CODE-1",
                "--state-dir",
                str(state),
            )
            assert enrolled == 0
            capsys.readouterr()
            config = agent_config(tmp_path / "agent.yaml", dns_server, collector_url, state)
            code = await run_cli(
                "agent", "probe", f"http://news.test:{site_port}/", "--config", str(config)
            )
    out = capsys.readouterr().out
    assert code == 1
    assert "from AS58224 TCI Loopback (IR)" in out
    assert "Control  the collector fetched it: status 200" in out
    assert "Verdict  blockpage" in out and "ir_body_1" in out
