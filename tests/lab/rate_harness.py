"""Run inside the lab's sandbox by tests/lab/test_rates.py: build a scenario whose censor
blocks with rates below 1 and count, as one JSON line, how often each method really
blocked from an agent's namespace.

Usage::

    unshare ... python -m tests.lab.rate_harness RUN_DIR SCENARIO SOURCES

The agent's namespace gets ``SOURCES`` extra addresses (198.18.0.0/24, routed back by the
router), so that each connection of a wave comes from an agent of its own: the kernel
rules hold a draw per (agent, site), and these are independent draws. Each agent tries
twice in a row, well inside the hold, to see the held answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.message
import dns.rdatatype

from lab.netns import Namespaces
from lab.plan import PUBLIC_RESOLVER
from tests.lab.harness import built_network

TIMEOUT_S = 1.5
EXTRA_NET = "198.18.0"


def _sock(ns: Namespaces, netns: str, source: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
    sock = ns.make_socket(netns, kind)
    sock.bind((source, 0))
    return sock


async def connect(ns: Namespaces, netns: str, source: str, address: str) -> bool:
    loop = asyncio.get_running_loop()
    sock = _sock(ns, netns, source)
    try:
        async with asyncio.timeout(TIMEOUT_S * 2):
            await loop.sock_connect(sock, (address, 443))
        return True
    except (OSError, TimeoutError):
        return False
    finally:
        sock.close()


@contextlib.asynccontextmanager
async def _stream(
    ns: Namespaces,
    netns: str,
    source: str,
    address: str,
    port: int,
    ctx: ssl.SSLContext | None = None,
    sni: str | None = None,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A connection from ``source`` in ``netns`` (TLS with ``ctx``), closed afterwards."""
    loop = asyncio.get_running_loop()
    sock = _sock(ns, netns, source)
    writer: asyncio.StreamWriter | None = None
    handed = False  # once a transport owns the socket, it closes it (also when it fails)
    try:
        await loop.sock_connect(sock, (address, port))
        handed = True
        reader, writer = await asyncio.open_connection(sock=sock, ssl=ctx, server_hostname=sni)
        yield reader, writer
    finally:
        if writer is not None:
            writer.close()
        elif not handed:
            sock.close()


async def handshake(ns: Namespaces, netns: str, source: str, address: str, sni: str) -> str:
    """``handshake``, ``reset`` (the censor), or what else went wrong (a busy machine)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        async with (
            asyncio.timeout(TIMEOUT_S * 4),
            _stream(ns, netns, source, address, 443, ctx, sni),
        ):
            return "handshake"
    except ConnectionResetError:
        return "reset"
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        return type(exc).__name__


async def injected(ns: Namespaces, netns: str, source: str, name: str, blockpage: str) -> str:
    """``blockpage`` (a forged answer), ``answer`` (the real one), or ``timeout``."""
    loop = asyncio.get_running_loop()
    sock = _sock(ns, netns, source, socket.SOCK_DGRAM)
    try:
        sock.connect((PUBLIC_RESOLVER, 53))
        await loop.sock_sendall(sock, dns.message.make_query(name, dns.rdatatype.A).to_wire())
        async with asyncio.timeout(TIMEOUT_S * 4):
            answer = dns.message.from_wire(await loop.sock_recv(sock, 4096))
        forged = [rr.to_text() for rrset in answer.answer for rr in rrset] == [blockpage]
        return "blockpage" if forged else "answer"
    except (OSError, TimeoutError):
        return "timeout"
    finally:
        sock.close()


async def blockpage(ns: Namespaces, netns: str, source: str, address: str, host: str) -> str:
    """``blockpage``, ``page`` (passed on to the site), or what else went wrong."""
    try:
        async with (
            asyncio.timeout(TIMEOUT_S * 4),
            _stream(ns, netns, source, address, 80) as (reader, writer),
        ):
            writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            head = await reader.read(12)
        return "blockpage" if head.startswith(b"HTTP/1.1 403") else "page"
    except (OSError, TimeoutError) as exc:
        return type(exc).__name__


async def main(run_dir: Path, scenario_path: Path, sources: int) -> None:
    async with built_network(run_dir, scenario_path) as (lab, ns):
        plan = lab.plan
        isp = plan.isps[0]
        agent = isp.agents[0]
        extra = [f"{EXTRA_NET}.{k + 1}" for k in range(sources)]
        await ns.ip_batch(agent.netns, [f"address add {a}/32 dev eth0" for a in extra])
        await ns.ip_batch(
            isp.netns, [f"route add {EXTRA_NET}.0/24 via {agent.address} dev {agent.router_ifname}"]
        )
        fb = plan.site("www.facebook.com").address
        tw = plan.site("twitter.com").address
        bbc = plan.site("www.bbc.com").address

        async def wave(probe: Any, *args: Any) -> list[Any]:
            return list(await asyncio.gather(*(probe(ns, agent.netns, a, *args) for a in extra)))

        out: dict[str, Any] = {"sources": sources, "hold_s": lab.hold_s}
        out["ip_block"] = await wave(connect, fb)
        out["ip_block_again"] = await wave(connect, fb)
        # TLS costs CPU on both ends in this one process: a few agents at a time, each
        # trying twice in a row (well inside the hold), then with an innocuous name.
        limit = asyncio.Semaphore(8)

        async def twice(source: str) -> tuple[str, str, str]:
            async with limit:
                first = await handshake(ns, agent.netns, source, tw, "twitter.com")
                again = await handshake(ns, agent.netns, source, tw, "twitter.com")
                other = await handshake(ns, agent.netns, source, tw, "example.com")
            return first, again, other

        tls = await asyncio.gather(*(twice(a) for a in extra))
        out["sni_reset"] = [t[0] for t in tls]
        out["sni_reset_again"] = [t[1] for t in tls]
        out["sni_innocuous"] = [t[2] for t in tls]
        queries = [
            await injected(ns, agent.netns, extra[0], "www.youtube.com", plan.blockpage_ip)
            for _ in range(sources * 2)
        ]
        out["dns_inject"] = queries
        out["http_blockpage"] = [
            await blockpage(ns, agent.netns, extra[0], bbc, "www.bbc.com") for _ in range(sources)
        ]
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])))
