"""The collector's aiohttp application: ``make_app(config)``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from collector.api import agents, ingest, openapi
from collector.api.errors import error_middleware
from collector.config import CollectorConfig
from collector.metrics import CONTENT_TYPE_LATEST, Metrics
from collector.netdb import NetDb, load_netdb
from collector.state import CONFIG, METRICS, NETDB, PSEUDONYM_KEY, STORE, TARGETS
from collector.store.base import PSEUDONYM_SECRET, Store
from collector.store.sqlite import SqliteStore
from collector.targets import load_targets


def make_store(config: CollectorConfig) -> Store:
    """The store the configuration asks for (not yet opened)."""
    if config.database.postgres_dsn:
        from collector.store.postgres import PostgresStore

        return PostgresStore(config.database.postgres_dsn)
    return SqliteStore(config.database.sqlite_path)


async def _store_and_tables(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: open the store, load the IP-to-ASN table and the target list."""
    config = app[CONFIG]
    store = app[STORE]
    netdb_path, targets_path = config.netdb_path, config.targets_path
    app[NETDB] = await asyncio.to_thread(load_netdb, netdb_path) if netdb_path else NetDb()
    app[TARGETS] = await asyncio.to_thread(load_targets, targets_path)
    await store.open()
    try:
        app[PSEUDONYM_KEY] = await store.secret(PSEUDONYM_SECRET)
        yield
    finally:
        await store.close()


async def _monitor_and_alerts(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the monitor (run while this collector holds the monitor lock) and the
    webhook delivery worker (every collector runs one), as background tasks."""
    from collector.alerts.delivery import DeliveryMetrics, DeliveryWorker
    from collector.api.events import CHANGED
    from collector.monitor.runner import Monitor, MonitorMetrics

    config = app[CONFIG]
    registry = app[METRICS].registry
    monitor = Monitor(
        app[STORE], config, app[PSEUDONYM_KEY], metrics=MonitorMetrics.create(registry)
    )
    worker = DeliveryWorker(app[STORE], config.alerts, metrics=DeliveryMetrics.create(registry))
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
