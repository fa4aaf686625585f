"""Run inside the lab's sandbox by the tests: build a scenario's network (no collector, no
agents) and report, as one JSON line, what an agent's namespace can and cannot reach.

Usage (what tests/lab/test_network.py does)::

    unshare ... python -m tests.lab.harness RUN_DIR SCENARIO HOST_ADDRESS HOST_PORT

After printing, it keeps the lab up until its standard input closes, so that the test can
look at the host's namespaces while the lab exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.message
import dns.rdatatype

from lab.netns import Namespaces
from lab.orchestrator import Lab, Progress
from lab.plan import PUBLIC_RESOLVER
from lab.programs import RunPaths
from lab.scenario import load_scenario

TIMEOUT_S = 2.0


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


async def tcp(ns: Namespaces, netns: str, address: str, port: int) -> str:
    loop = asyncio.get_running_loop()
    sock = ns.make_socket(netns)
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await loop.sock_connect(sock, (address, port))
        return "connected"
    except (OSError, TimeoutError) as exc:
        return _outcome(exc)
    finally:
        sock.close()


async def dns_a(ns: Namespaces, netns: str, resolver: str, name: str) -> list[str] | str:
    loop = asyncio.get_running_loop()
    sock = ns.make_socket(netns, kind=2)  # SOCK_DGRAM
    try:
        sock.connect((resolver, 53))
        await loop.sock_sendall(sock, dns.message.make_query(name, dns.rdatatype.A).to_wire())
        async with asyncio.timeout(TIMEOUT_S):
            answer = dns.message.from_wire(await loop.sock_recv(sock, 4096))
        return [rr.to_text() for rrset in answer.answer for rr in rrset]
    except (OSError, TimeoutError) as exc:
        return _outcome(exc)
    finally:
        sock.close()


async def tls(ns: Namespaces, netns: str, address: str, sni: str, ca_file: Path) -> str:
    loop = asyncio.get_running_loop()
    sock = ns.make_socket(netns)
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await loop.sock_connect(sock, (address, 443))
            _, writer = await asyncio.open_connection(sock=sock, ssl=ctx, server_hostname=sni)
        writer.close()
        return "handshake"
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        return _outcome(exc)


async def http_get(ns: Namespaces, netns: str, address: str, host: str) -> str:
    loop = asyncio.get_running_loop()
    sock = ns.make_socket(netns)
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await loop.sock_connect(sock, (address, 80))
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            body = await reader.read(-1)
            writer.close()
        return body.decode("latin-1")
    except (OSError, TimeoutError) as exc:
        return _outcome(exc)


@contextlib.asynccontextmanager
async def built_network(
    run_dir: Path, scenario_path: Path
) -> AsyncIterator[tuple[Lab, Namespaces]]:
    """The scenario's network (no collector, no agents), taken down afterwards."""
    lab = Lab(load_scenario(scenario_path), RunPaths(run_dir), Progress(sys.stderr, quiet=True))
    try:
        yield lab, await lab.build_network()
    finally:
        await lab.close()


async def main(run_dir: Path, scenario_path: Path, host_address: str, host_port: int) -> None:
    async with built_network(run_dir, scenario_path) as (lab, ns):
        plan = lab.plan
        isp = plan.isps[0]
        agent = next(a for a in isp.agents if not a.vpn)
        vpn = next(a for a in isp.agents if a.vpn)
        ca = run_dir / "collector" / "lab-ca.pem"
        fb = plan.site("www.facebook.com").address
        tw = plan.site("twitter.com").address
        bbc = plan.site("www.bbc.com").address
        out: dict[str, Any] = {
            "agent_to_host": await tcp(ns, agent.netns, host_address, host_port),
            "agent_to_loopback_port": await tcp(ns, agent.netns, "127.0.0.1", host_port),
            "internet_to_host": await tcp(ns, "internet", host_address, host_port),
            "router_to_host": await tcp(ns, isp.netns, host_address, host_port),
            "dns_isp": await dns_a(ns, agent.netns, agent.resolver, "www.facebook.com"),
            "dns_public_hijacked": await dns_a(
                ns, agent.netns, PUBLIC_RESOLVER, "www.facebook.com"
            ),
            "dns_vpn": await dns_a(ns, vpn.netns, PUBLIC_RESOLVER, "www.facebook.com"),
            "dns_open_site": await dns_a(ns, agent.netns, agent.resolver, "en.wikipedia.org"),
            "tls_real_sni": await tls(ns, agent.netns, fb, "www.facebook.com", ca),
            "tls_innocuous_sni": await tls(ns, agent.netns, fb, "example.com", ca),
            "tls_vpn": await tls(ns, vpn.netns, fb, "www.facebook.com", ca),
            "http_censored_host": await http_get(ns, agent.netns, bbc, "www.bbc.com"),
            "http_vpn": await http_get(ns, vpn.netns, bbc, "www.bbc.com"),
            "http_passthrough": await http_get(
                ns, agent.netns, plan.site("www.irna.ir").address, "www.irna.ir"
            ),
            "ip_blocked": await tcp(ns, agent.netns, tw, 443),
            "ip_blocked_vpn": await tcp(ns, vpn.netns, tw, 443),
            "blockpage_server": await http_get(ns, agent.netns, plan.blockpage_ip, "www.bbc.com"),
        }
        print(json.dumps(out), flush=True)
        await asyncio.to_thread(sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
