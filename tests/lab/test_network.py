"""The lab's network, built for real in namespaces: isolation from the host and censors.

One lab network is built per module (no collector, no agents): ``tests/lab/harness.py``
runs inside the lab's sandbox, probes from an agent's namespace and reports what it saw,
then holds the lab up while these tests look at the host's own namespace.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from lab.netns import tool_path
from tests.lab.sandbox import ROOT, harness_command, harness_env, require_lab

pytestmark = pytest.mark.lab


def host_state() -> tuple[str, str]:
    ip = shutil.which("ip", path=tool_path()) or "ip"
    links = subprocess.run([ip, "-o", "link"], capture_output=True, text=True, check=True).stdout
    netns = subprocess.run([ip, "netns", "list"], capture_output=True, text=True).stdout
    return links, netns


def host_address() -> str:
    """A global address of this machine, or loopback when it has none."""
    ip = shutil.which("ip", path=tool_path()) or "ip"
    out = subprocess.run(
        [ip, "-o", "-4", "addr", "show", "scope", "global"], capture_output=True, text=True
    ).stdout
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            return fields[fields.index("inet") + 1].split("/")[0]
    return "127.0.0.1"


@pytest.fixture(scope="module")
def lab_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_lab()
    tmp = tmp_path_factory.mktemp("lab-network")
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    address = host_address()
    before = host_state()
    proc = subprocess.Popen(
        harness_command("tests.lab.harness", tmp / "run", "network-check.yaml", address, str(port)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=harness_env(),
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline()
        if not line:
            _, err = proc.communicate(timeout=30)
            pytest.fail(f"the lab harness failed: {err[-3000:]}")
        during = host_state()
        yield {"seen": json.loads(line), "before": before, "during": during, "address": address}
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()
    after = host_state()
    assert after == before


def test_nothing_appears_in_the_host_namespace(lab_network: dict[str, Any]) -> None:
    """While the lab runs, the host's links and named namespaces are exactly as before."""
    assert lab_network["during"] == lab_network["before"]


def test_host_is_unreachable_from_inside(lab_network: dict[str, Any]) -> None:
    """No namespace of the lab reaches the host's own address or its loopback listener."""
    seen = lab_network["seen"]
    for key in ("agent_to_host", "internet_to_host", "router_to_host"):
        assert seen[key] in ("ENETUNREACH", "EHOSTUNREACH", "ECONNREFUSED", "timeout"), key
        assert seen[key] != "connected"
    # 127.0.0.1 inside an agent is the agent's own loopback, where nothing listens.
    assert seen["agent_to_loopback_port"] == "ECONNREFUSED"


def test_dns_injection_cannot_be_bypassed(lab_network: dict[str, Any]) -> None:
    """The ISP's resolver forges the blockpage address, also for queries to another resolver."""
    seen = lab_network["seen"]
    assert seen["dns_isp"] == ["10.10.34.34"]
    assert seen["dns_public_hijacked"] == ["10.10.34.34"]
    assert seen["dns_open_site"] not in (["10.10.34.34"], [])


def test_vpn_agent_goes_around_the_censor(lab_network: dict[str, Any]) -> None:
    """A VPN agent gets real answers, real handshakes, real pages and unblocked addresses."""
    seen = lab_network["seen"]
    assert seen["dns_vpn"] not in (["10.10.34.34"], [])
    assert seen["tls_vpn"] == "handshake"
    assert "<title>www.bbc.com - lab site</title>" in seen["http_vpn"]
    assert seen["ip_blocked_vpn"] == "connected"


def test_sni_filtering_resets_only_the_real_name(lab_network: dict[str, Any]) -> None:
    """A ClientHello naming the censored site is reset; an innocuous name gets through."""
    seen = lab_network["seen"]
    assert seen["tls_real_sni"] == "reset"
    assert seen["tls_innocuous_sni"] == "handshake"


def test_http_host_filtering_serves_the_blockpage(lab_network: dict[str, Any]) -> None:
    """A plain-HTTP request for a censored Host gets the iframe blockpage from the router."""
    page = lab_network["seen"]["http_censored_host"]
    assert page.startswith("HTTP/1.1 403")
    assert '<iframe src="http://10.10.34.34:80?' in page


def test_http_proxy_passes_other_hosts_on(lab_network: dict[str, Any]) -> None:
    """Plain-HTTP requests for hosts the censor does not list reach the real site through
    the router's transparent proxy."""
    page = lab_network["seen"]["http_passthrough"]
    assert page.startswith("HTTP/1.1 200")
    assert "<title>www.irna.ir - lab site</title>" in page


def test_ip_blocking_drops_connections(lab_network: dict[str, Any]) -> None:
    """Connections to an IP-blocked site's address time out."""
    assert lab_network["seen"]["ip_blocked"] == "timeout"


def test_blockpage_server_answers_injected_requests(lab_network: dict[str, Any]) -> None:
    """Requests sent to the injected address get the blockpage from the blockpage server."""
    assert '<iframe src="http://10.10.34.34:80?' in lab_network["seen"]["blockpage_server"]
