"""The collector's periodic upkeep of its store: PostgreSQL month partitions made ahead,
and retention (``database.retention``) applied, once at start and then every hour."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Final

import structlog
from aiohttp import web

from collector.state import CONFIG, STORE

INTERVAL_S: Final = 3600.0
log = structlog.get_logger("collector.maintenance")


async def run_once(app: web.Application, now: float) -> None:
    store = app[STORE]
    await store.maintain(now)
    retention = app[CONFIG].database.retention_s
    if retention is not None:
        outcome = await store.prune(now - retention)
        if outcome.deleted or outcome.dropped_partitions:
            log.info(
                "retention_pruned",
                deleted=outcome.deleted,
                dropped_partitions=outcome.dropped_partitions,
            )


async def _loop(app: web.Application) -> None:
    while True:
        try:
            await run_once(app, time.time())
        except Exception as exc:  # upkeep must not stop the collector; try again later
            log.error("maintenance_failed", error=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(INTERVAL_S)


async def maintenance_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the upkeep task, from start-up (after the store opened) to shutdown."""
    task = asyncio.create_task(_loop(app))
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait([task])
