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
    """DROP DATABASE ... WITH (FORCE) on the asyncpg connection ``admin``. An autovacuum
    worker, which an unprivileged role may not terminate, can hold a fresh database after
    its last use (for many seconds after a large benchmark run); a plain DROP DATABASE
    then ends the worker itself (PostgreSQL cancels autovacuum for it), retried while the
    worker stops."""
    import asyncpg

    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    except asyncpg.InsufficientPrivilegeError:
        pass
    for attempt in range(50):
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            return
        except asyncpg.ObjectInUseError:
            if attempt == 49:
                raise
            await asyncio.sleep(0.2)
