"""The TCP step: connect to each resolved address, note how it went, hang up."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any, Final

from shared.probes.deadline import Deadline
from shared.probes.failures import classify, wire
from shared.schema import TcpFacts

TCP_SHARE: Final = 0.3  # of the measurement's time, at most, for all the connects together


async def open_socket(address: str, port: int, until: float) -> socket.socket:
    """A connected, non-blocking TCP socket; raises OSError or TimeoutError."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout_at(until):
            await loop.sock_connect(sock, (address, port))
    except BaseException:
        sock.close()  # whatever happened, including cancellation, the socket is ours to close
        raise
    return sock


async def connect(address: str, port: int, until: float) -> TcpFacts:
    """Connect to ``address:port`` once and report the outcome as facts."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    failure: Any = None
    try:
        sock = await open_socket(address, port, until)
    except (TimeoutError, OSError) as exc:
        failure = wire(classify(exc))
    else:
        sock.close()
    return {
        "address": address,
        "port": port,
        "failure": failure,
        "t_ms": round((loop.time() - started) * 1000, 3),
    }


async def connect_all(addresses: list[str], port: int, deadline: Deadline) -> list[TcpFacts]:
    """Connect to every address at once, within the TCP step's share of the deadline."""
    until = deadline.step(TCP_SHARE)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(connect(a, port, until)) for a in addresses]
    return [t.result() for t in tasks]
