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


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_app(config: CollectorConfig, store: Store | None = None) -> web.Application:
    """The collector application for ``config`` (its store opens when the app starts)."""
    from collector.api import control, query  # owned by other parts; imported late

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
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    agents.add_routes(app)
    ingest.add_routes(app)
    control.add_routes(app)
    query.add_routes(app)
    openapi.add_routes(app)
    return app
