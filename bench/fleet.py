"""A fleet on this machine for the benchmarks and the fleet test: N ``filterwatch collector
serve`` processes on one PostgreSQL behind HAProxy, configured by deploy/fleet/haproxy.cfg
as shipped (only the addresses change). Everything listens on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HAPROXY_CFG = ROOT / "deploy" / "fleet" / "haproxy.cfg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def haproxy_config(front: int, ports: list[int]) -> str:
    """deploy/fleet/haproxy.cfg with this front port and one server line per collector."""
    text = HAPROXY_CFG.read_text()
    text = re.sub(r"(?m)^    bind .*$", f"    bind 127.0.0.1:{front}", text)
    text = re.sub(r"(?m)^    server .*\n", "", text)
    servers = "".join(f"    server collector{i + 1} 127.0.0.1:{p}\n" for i, p in enumerate(ports))
    return text.rstrip("\n") + "\n" + servers


async def drop_database(admin: Any, name: str) -> None:
    """DROP DATABASE ... WITH (FORCE) on the asyncpg connection ``admin``, retried: an
    autovacuum worker that an unprivileged role may not terminate can hold a fresh database
    for a moment after its last use."""
    import asyncpg

    for attempt in range(50):
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except asyncpg.InsufficientPrivilegeError:
            if attempt == 49:
                raise
            await asyncio.sleep(0.2)
