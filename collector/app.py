"""The collector's aiohttp application: ``make_app(config)``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from aiohttp import web

from collector.api import agents, ingest, openapi
from collector.api.errors import error_middleware
from collector.config import CollectorConfig
from collector.maintenance import maintenance_ctx
from collector.metrics import CONTENT_TYPE_LATEST, Metrics
from collector.netdb import NetDb, load_netdb
from collector.state import CONFIG, FINGERPRINTS, METRICS, NETDB, PSEUDONYM_KEY, STORE, TARGETS
from collector.store.base import PSEUDONYM_SECRET, Store
from collector.store.sqlite import SqliteStore
from collector.targets import load_targets, log_targets
from shared.blockpages import Fingerprints, load_fingerprint_set

log = structlog.get_logger("collector.app")


def make_store(config: CollectorConfig) -> Store:
    """The store the configuration asks for (not yet opened)."""
    if config.database.postgres_dsn:
        from filterwatch.extras import require_extra

        require_extra("the PostgreSQL store (database.postgres_dsn)", "postgres")
        from collector.store.postgres import PostgresStore

        return PostgresStore(config.database.postgres_dsn)
    return SqliteStore(config.database.sqlite_path)


def _fingerprint_set(path: Path | None) -> Fingerprints:
    """The collector's set: the configured files then the shipped ones, compiled now."""
    found = load_fingerprint_set([path] if path is not None else [])
    found.compile()
    return found


async def _store_and_tables(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: open the store, load the IP-to-ASN table, the target list and the
    fingerprints, and say what was loaded."""
    config = app[CONFIG]
    store = app[STORE]
    netdb_path, targets_path = config.netdb_path, config.targets_path
    app[NETDB] = await asyncio.to_thread(load_netdb, netdb_path) if netdb_path else NetDb()
    if netdb_path is None:
        log.warning("netdb_missing", hint="set netdb_path: every agent is AS0/ZZ without it")
    else:
        log.info("netdb_loaded", path=str(netdb_path), rows=len(app[NETDB]))
    app[TARGETS] = await asyncio.to_thread(load_targets, targets_path)
    log_targets(app[TARGETS], targets_path)
    app[FINGERPRINTS] = await asyncio.to_thread(_fingerprint_set, config.fingerprints_path)
    log.info("fingerprints_loaded", **app[FINGERPRINTS].counts())
    await store.open()
    try:
        app[PSEUDONYM_KEY] = await store.secret(PSEUDONYM_SECRET)
        yield
    finally:
        await store.close()


async def _monitor_and_alerts(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the monitor (run while this collector holds the monitor lock) and the
    webhook delivery worker (every collector runs one), as background tasks."""
    from collector.alerts.delivery import DeliveryWorker
    from collector.api.events import CHANGED
    from collector.monitor.runner import Monitor

    config = app[CONFIG]
    metrics = app[METRICS]
    monitor = Monitor(app[STORE], config, app[PSEUDONYM_KEY], metrics=metrics.monitor)
    worker = DeliveryWorker(app[STORE], config.alerts, metrics=metrics.delivery)
    monitor.wake_deliveries = worker.wake
    app[CHANGED] = lambda: monitor.changed
    stop = asyncio.Event()
    tasks = [asyncio.create_task(worker.run(stop), name="webhook-deliveries")]
    if config.monitor.enabled:
        tasks.append(asyncio.create_task(monitor.run(stop), name="monitor"))
    try:
        yield
    finally:
        stop.set()
        try:
            async with asyncio.timeout(10):
                await asyncio.gather(*tasks, return_exceptions=True)
        except TimeoutError:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_app(config: CollectorConfig, store: Store | None = None) -> web.Application:
    """The collector application for ``config`` (its store opens when the app starts)."""
    from collector.api import control, events, query  # owned by other parts; imported late

    app = web.Application(
        middlewares=[error_middleware],
        client_max_size=config.limits.max_body_bytes,
        # Request bodies are inflated by read_body with a cap, never by aiohttp unbounded.
        handler_args={"auto_decompress": False},
    )
    app[CONFIG] = config
    app[STORE] = store if store is not None else make_store(config)
    app[METRICS] = Metrics.create()
    app.cleanup_ctx.append(_store_and_tables)
    app.cleanup_ctx.append(maintenance_ctx)
    app.cleanup_ctx.append(_monitor_and_alerts)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    agents.add_routes(app)
    ingest.add_routes(app)
    control.add_routes(app)
    query.add_routes(app)
    events.add_routes(app)
    openapi.add_routes(app)
    if config.dashboard.enabled:
        from collector.dashboard.views import add_dashboard  # the template engine: only if used

        add_dashboard(app)
    return app
