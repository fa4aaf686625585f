"""``filterwatch collector ...``: serve, enroll-code, analyst-token, revoke-agent (and the
leaks and export commands, which collector.query_cli adds)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import structlog
from aiohttp import web

from collector import events_cli, query_cli
from collector.auth import hash_enroll_code, hash_secret, new_analyst_token, new_enroll_code
from collector.config import CollectorConfig, load_collector_config
from collector.netdb import NetdbError
from collector.server import make_runner, tune_gc
from collector.store.base import PSEUDONYM_SECRET, Store
from shared.config import parse_duration
from shared.errors import ConfigError
from shared.logging import configure_logging

T = TypeVar("T")
log = structlog.get_logger("collector")


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        help="the collector's YAML configuration (default: built-in defaults, "
        "SQLite file filterwatch.sqlite3 in the working directory)",
    )


def _country(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z]{2}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a two-letter country code")
    return text.upper()


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _expiry(text: str) -> float | None:
    if text.lower() == "never":
        return None
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be longer than 0s")
    return seconds


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("collector", help="the collector service")
    cmds = p.add_subparsers(dest="command", metavar="COMMAND")

    serve = cmds.add_parser("serve", help="run the collector")
    _config_arg(serve)
    serve.add_argument("--host", help="address to listen on (overrides listen.host)")
    serve.add_argument("--port", type=int, help="port to listen on (overrides listen.port)")
    serve.set_defaults(handler=serve_command)

    code = cmds.add_parser("enroll-code", help="print an enrollment code for volunteers")
    _config_arg(code)
    code.add_argument("--country", type=_country, help="the agents' country, e.g. IR")
    code.add_argument("--uses", type=_positive, default=1, help="agents it enrolls (default 1)")
    code.add_argument(
        "--expires", type=_expiry, default=7 * 86400.0, help="lifetime like 7d, 12h or never"
    )
    code.set_defaults(handler=enroll_code_command)

    token = cmds.add_parser("analyst-token", help="print a new analyst token (shown once)")
    _config_arg(token)
    token.set_defaults(handler=analyst_token_command)

    revoke = cmds.add_parser("revoke-agent", help="refuse an agent's token from now on")
    _config_arg(revoke)
    revoke.add_argument("agent_id")
    revoke.set_defaults(handler=revoke_agent_command)

    prune = cmds.add_parser(
        "prune",
        help="delete measurements made before a date (retention)",
        description="Delete the measurements made before DATE. PostgreSQL drops whole month"
        " partitions and deletes the rest in batches; SQLite deletes in batches. Ingest goes"
        " on meanwhile.",
    )
    _config_arg(prune)
    prune.add_argument(
        "--before", required=True, metavar="DATE", help="ISO 8601 (2025-01-01) or an age like 400d"
    )
    prune.set_defaults(handler=prune_command)

    backup = cmds.add_parser(
        "backup",
        help="an online backup of the SQLite store (PostgreSQL: use pg_dump)",
        description="Copy the SQLite store into FILE while the collector runs (SQLite's online"
        " backup API). For PostgreSQL use pg_dump (see the README).",
    )
    _config_arg(backup)
    backup.add_argument("--out", required=True, type=Path, metavar="FILE")
    backup.set_defaults(handler=backup_command)

    query_cli.register_leaks(cmds)
    query_cli.register_export(cmds)
    events_cli.register(cmds)


def _load(args: argparse.Namespace) -> CollectorConfig:
    return load_collector_config(args.config)  # a ConfigError: exit 2 naming file and key


def _with_store(config: CollectorConfig, fn: Callable[[Store], Awaitable[T]]) -> T:
    from collector.app import make_store

    async def run() -> T:
        store = make_store(config)
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(run())


def enroll_code_command(args: argparse.Namespace) -> int:
    config = _load(args)
    code = new_enroll_code()
    expires_at = None if args.expires is None else time.time() + args.expires
    _with_store(
        config,
        lambda store: store.add_enroll_code(
            hash_enroll_code(code), args.country, args.uses, expires_at
        ),
    )
    print(code)
    until = (
        "never expires"
        if expires_at is None
        else "expires " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires_at))
    )
    where = f" for {args.country}" if args.country else ""
    print(f"(enrolls {args.uses} agent(s){where}; {until})", file=sys.stderr)
    return 0


def analyst_token_command(args: argparse.Namespace) -> int:
    config = _load(args)
    token = new_analyst_token()
    _with_store(config, lambda store: store.add_analyst_token(hash_secret(token)))
    print(token)
    print("(only its hash is stored: keep it now, it cannot be shown again)", file=sys.stderr)
    return 0


def revoke_agent_command(args: argparse.Namespace) -> int:
    config = _load(args)
    found = _with_store(config, lambda store: store.revoke_agent(args.agent_id))
    if not found:
        print(f"filterwatch: no agent {args.agent_id!r} in this collector's store", file=sys.stderr)
        return 1
    print(f"agent {args.agent_id} is revoked", file=sys.stderr)
    return 0


def serve_command(args: argparse.Namespace) -> int:
    config = _load(args)
    listen = config.listen
    if args.host is not None:
        listen = dataclasses.replace(listen, host=args.host)
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            print(f"filterwatch: --port: {args.port} is not in 0..65535", file=sys.stderr)
            return 2
        listen = dataclasses.replace(listen, port=args.port)
    config = dataclasses.replace(config, listen=listen)
    tls = None
    if listen.tls_cert is not None and listen.tls_key is not None:
        from collector.tls import server_context

        tls = server_context(listen.tls_cert, listen.tls_key, _source(args))
    configure_logging(config.logging.json, config.logging.level)
    try:
        asyncio.run(_serve(config, tls, _source(args)))
    except NetdbError as exc:
        print(f"filterwatch: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"filterwatch: cannot listen on {listen.host}:{listen.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    return 0


def _source(args: argparse.Namespace) -> str:
    return str(args.config) if args.config else "<defaults>"


async def _serve(config: CollectorConfig, tls: ssl.SSLContext | None, source: str) -> None:
    from collector.app import make_app

    runner = make_runner(make_app(config), config)
    await runner.setup()
    tune_gc()
    # The handlers first: whoever reads the "listening" line may signal at once (a SIGHUP
    # or SIGTERM before them would kill the process with the default action).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if tls is not None:
        loop.add_signal_handler(signal.SIGHUP, _reload_tls, tls, config, source)
    try:
        site = web.TCPSite(runner, config.listen.host, config.listen.port, ssl_context=tls)
        await site.start()
        scheme = "https" if tls is not None else "http"
        for address in runner.addresses:
            host, port = address[0], address[1]
            shown = f"[{host}]" if ":" in host else host
            # The collector's own address (not a client's): printed, not logged.
            print(f"filterwatch collector listening on {scheme}://{shown}:{port}", flush=True)
        log.info("collector_started", sqlite=str(config.database.sqlite_path), tls=tls is not None)
        await stop.wait()
        log.info("collector_stopping")
    finally:
        await runner.cleanup()


def _reload_tls(tls: ssl.SSLContext, config: CollectorConfig, source: str) -> None:
    """SIGHUP: the certificate and key again (renewed); a pair that fails keeps the old."""
    from collector.tls import load_pair

    cert, key = config.listen.tls_cert, config.listen.tls_key
    assert cert is not None and key is not None
    try:
        load_pair(tls, cert, key, source)
    except ConfigError as exc:
        log.error("tls_reload_failed", error=str(exc))
        return
    log.info("tls_reloaded", cert=str(cert))


def prune_command(args: argparse.Namespace) -> int:
    from collector.filters import parse_time

    config = _load(args)
    before = parse_time(args.before, "--before")
    if before > time.time():
        print(
            "filterwatch: --before: that is in the future; nothing would be kept", file=sys.stderr
        )
        return 2
    outcome = _with_store(config, lambda store: store.prune(before))
    if outcome.busy:
        print(
            "filterwatch: another collector is pruning right now; try again later", file=sys.stderr
        )
        return 1
    when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(before))
    months = (
        f" ({len(outcome.dropped_partitions)} month partitions dropped)"
        if outcome.dropped_partitions
        else ""
    )
    print(f"deleted {outcome.deleted} measurements made before {when}{months}")
    return 0


def backup_command(args: argparse.Namespace) -> int:
    config = _load(args)
    if config.database.postgres_dsn:
        print(
            "filterwatch: backup copies the SQLite store; for PostgreSQL use pg_dump, e.g.\n"
            '  pg_dump --format=custom --file=filterwatch.dump "$DSN"\n'
            'and pg_restore --dbname="$NEW_DSN" filterwatch.dump to restore',
            file=sys.stderr,
        )
        return 2
    from collector.store.sqlite import SqliteStore

    out: Path = args.out
    if out.resolve() == config.database.sqlite_path.resolve():
        print("filterwatch: --out: that is the store itself", file=sys.stderr)
        return 2
    if not out.parent.is_dir():
        print(f"filterwatch: --out: {out.parent} is not a directory", file=sys.stderr)
        return 2

    async def run(store: Store) -> None:
        assert isinstance(store, SqliteStore)
        # The pseudonym key goes along (made now if the store never had one), so that the
        # restored store names agents in exports exactly as this one does.
        await store.secret(PSEUDONYM_SECRET)
        await store.backup(out)

    _with_store(config, run)
    print(f"backed up {config.database.sqlite_path} to {out}")
    return 0
