"""``filterwatch agent enroll|run|probe|status|check|install-service|uninstall-service``"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.collector_api import ApiError, CollectorClient, enroll
from agent.config import AgentConfig, AgentSetup, default_config, load_agent_setup
from agent.spool import read_stats
from agent.state import (
    SPOOL_FILE,
    AlreadyRunningError,
    Credentials,
    NotEnrolledError,
    StateError,
    default_config_path,
    default_state_dir,
    load_credentials,
    load_status,
    save_credentials,
    write_atomically,
)
from shared.errors import ConfigError
from shared.logging import configure_logging


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("agent", help="the volunteer agent")
    cmds = p.add_subparsers(dest="command", metavar="COMMAND")

    def common(c: argparse.ArgumentParser) -> None:
        c.add_argument(
            "--config",
            type=Path,
            help=f"agent configuration (YAML; default {default_config_path()} if it exists)",
        )
        c.add_argument(
            "--state-dir",
            type=Path,
            help=f"credentials, spool and status (default {default_state_dir()})",
        )

    c = cmds.add_parser("enroll", help="trade an enrollment code for this agent's credentials")
    c.add_argument("--collector", required=True, metavar="URL", help="the collector's URL")
    c.add_argument("--code", required=True, help="the enrollment code from the collector")
    common(c)
    c.set_defaults(handler=cmd_enroll)

    c = cmds.add_parser("run", help="the agent daemon: measure every round and upload")
    common(c)
    c.set_defaults(handler=cmd_run)

    c = cmds.add_parser("probe", help="measure one URL now and explain the verdict")
    c.add_argument("url", metavar="URL")
    c.add_argument("--json", action="store_true", help="print the measurement as JSON")
    common(c)
    c.set_defaults(handler=cmd_probe)

    c = cmds.add_parser(
        "check",
        help="is my set-up right? load the configuration, credentials, fingerprints, targets",
        description="Loads the configuration, the credentials, the blockpage fingerprints and"
        " the cached targets and says what it found (exit 0), or names what is wrong (exit 2)."
        " Sends nothing anywhere.",
    )
    c.add_argument("--json", action="store_true", help="print what was found as JSON")
    common(c)
    c.set_defaults(handler=cmd_check)

    c = cmds.add_parser("status", help="spool size, last upload, last error, network")
    c.add_argument("--json", action="store_true", help="print the status as JSON")
    common(c)
    c.set_defaults(handler=cmd_status)

    for name, helptext, handler in (
        ("install-service", "install, enable and start the agent's systemd unit", cmd_install),
        ("uninstall-service", "stop, disable and remove the agent's systemd unit", cmd_uninstall),
    ):
        c = cmds.add_parser(name, help=helptext)
        scope = c.add_mutually_exclusive_group()
        scope.add_argument(
            "--user",
            dest="system",
            action="store_false",
            help="a user unit run by your own systemd user manager, no root (the default)",
        )
        scope.add_argument(
            "--system",
            dest="system",
            action="store_true",
            help="a system unit (needs root), run as a dynamic unprivileged user",
        )
        common(c)
        if name == "install-service":
            c.add_argument("--dry-run", action="store_true", help="print the unit, change nothing")
        c.set_defaults(handler=handler, system=False)


def _setup(args: argparse.Namespace) -> AgentSetup:
    """The configuration file (explicit, or the default one if it exists) and state dir."""
    return load_agent_setup(args.config, args.state_dir)


def _config_and_credentials(args: argparse.Namespace) -> tuple[AgentConfig, Credentials, Path]:
    setup = _setup(args)
    creds = load_credentials(setup.state_dir)
    config = setup.config or default_config(creds.collector_url)
    # The configuration may move the collector (a new name, a front); the token stays valid.
    return config, replace(creds, collector_url=config.collector_url), setup.state_dir


def _fail(message: str, code: int = 2) -> int:
    print(f"filterwatch: {message}", file=sys.stderr)
    return code


def cmd_enroll(args: argparse.Namespace) -> int:
    setup = _setup(args) if args.config is None or args.config.exists() else None
    state_dir = args.state_dir or (setup.state_dir if setup else default_state_dir())
    config = setup.config if setup else None
    try:
        default_config(args.collector)
    except ConfigError:
        return _fail(f"--collector: expected an http:// or https:// URL, got {args.collector!r}")

    async def trade() -> tuple[str, str]:
        upload = config.upload if config else None
        async with await CollectorClient.open(args.collector, None, upload) as collector:
            return await enroll(collector, args.code)

    try:
        agent_id, token = asyncio.run(trade())
    except ApiError as exc:
        return _fail(f"enrollment failed: {exc}", 1)
    try:
        path = save_credentials(state_dir, Credentials(agent_id, token, args.collector))
    except (OSError, StateError) as exc:
        return _fail(f"cannot write the credentials: {exc}", 1)
    if args.config is not None and not args.config.exists():
        lines = [f"collector_url: {json.dumps(args.collector)}"]
        if args.state_dir is not None:
            lines.append(f"state_dir: {json.dumps(str(args.state_dir.resolve()))}")
        args.config.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(args.config, ("\n".join(lines) + "\n").encode())
        print(f"wrote the configuration {args.config}")
    print(f"enrolled as agent {agent_id}; credentials in {path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    try:
        config, creds, state_dir = _config_and_credentials(args)
    except (NotEnrolledError, StateError) as exc:
        return _fail(str(exc))
    configure_logging(config.logging.json, config.logging.level)
    from agent.runner import run_agent

    try:
        asyncio.run(run_agent(config, creds, state_dir))
    except (AlreadyRunningError, StateError) as exc:
        return _fail(str(exc), 1)
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from agent.probe_cli import run_probe

    return run_probe(args)


def cmd_check(args: argparse.Namespace) -> int:
    """``agent check``: everything ``agent run`` reads at start-up, read now, nothing sent."""
    from agent.state import load_fingerprint_doc, load_targets
    from shared.blockpages import fingerprints_from_json, load_fingerprint_set

    setup = _setup(args)  # a ConfigError: exit 2 naming the file and the key
    try:
        creds = load_credentials(setup.state_dir)
    except NotEnrolledError:
        return _fail(
            f"not enrolled: no credentials in {setup.state_dir}; run `filterwatch agent enroll"
            " --collector URL --code CODE`"
        )
    except StateError as exc:
        return _fail(f"credentials: {exc}")
    config = setup.config or default_config(creds.collector_url)
    own = load_fingerprint_set(list(config.probes.fingerprints))  # ConfigError: file, line
    try:
        cached_doc = load_fingerprint_doc(setup.state_dir)
        cached = fingerprints_from_json(cached_doc) if cached_doc is not None else None
        targets = load_targets(setup.state_dir)
    except StateError as exc:
        return _fail(str(exc))
    except ConfigError as exc:
        return _fail(f"cached fingerprints: {exc} (remove the file; the next round fetches it)")
    doc: dict[str, Any] = {
        "config": str(setup.config_path) if setup.config_path else None,
        "state_dir": str(setup.state_dir),
        "agent_id": creds.agent_id,
        "collector_url": config.collector_url,
        "fingerprints": {
            "files": [str(p) for p in config.probes.fingerprints],
            **own.counts(),
            "from_collector": len(cached) if cached is not None else None,
        },
        "targets_cached": len(targets) if targets is not None else None,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    prints = doc["fingerprints"]
    lines = [
        f"configuration: {doc['config'] or 'none (defaults)'}",
        f"state dir:     {doc['state_dir']}",
        f"agent:         {creds.agent_id} -> {config.collector_url}",
        f"fingerprints:  {len(own)} ({prints['dns']} DNS, {prints['http']} HTTP,"
        f" {prints['false_positive']} false positives) from the shipped set"
        + (
            f" and {len(config.probes.fingerprints)} configured path(s)"
            if config.probes.fingerprints
            else ""
        ),
        "               "
        + (
            f"{len(cached)} more from the collector (cached)"
            if cached is not None
            else "the collector's set is fetched at the first round"
        ),
        "targets:       "
        + (
            f"{len(targets)} cached from the collector"
            if targets is not None
            else "none cached yet: the first round fetches them"
        ),
    ]
    print("\n".join(lines))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    setup = _setup(args)
    try:
        creds: Credentials | None = load_credentials(setup.state_dir)
    except NotEnrolledError:
        creds = None
    except StateError as exc:
        return _fail(str(exc))
    status = load_status(setup.state_dir)
    stats = read_stats(setup.state_dir / SPOOL_FILE)
    running = status.pid is not None and _alive(status.pid)
    doc = {
        "state_dir": str(setup.state_dir),
        "enrolled": creds is not None,
        "agent_id": creds.agent_id if creds else None,
        "collector_url": (setup.config.collector_url if setup.config else None)
        or (creds.collector_url if creds else None),
        "running": running,
        "spool": {
            "results": stats.results if stats else 0,
            "bytes": stats.bytes if stats else 0,
            "dropped": stats.dropped if stats else 0,
            "rejected": stats.rejected if stats else 0,
        },
        "uploaded": status.uploaded,
        "last_upload_at": status.last_upload_at,
        "last_round_at": status.last_round_at,
        "last_error": status.last_error,
        "last_error_at": status.last_error_at,
        "network": status.network,
        "network_checked_at": status.network_checked_at,
        "clock_skew_s": status.clock_skew_s,
        "clock_confirmed_at": status.clock_confirmed_at,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(_status_text(doc))
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    ago = max(0.0, time.time() - ts)
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))
    return f"{stamp} ({_ago(ago)} ago)"


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _status_text(doc: dict[str, Any]) -> str:
    spool = doc["spool"]
    net = doc["network"]
    network = (
        f"AS{net['asn']} {net['network_name']} ({net['cc']})".replace("  ", " ")
        if net
        else "unknown (results are judged inconclusive until the collector says)"
    )
    lines = [
        f"agent:        {doc['agent_id'] or 'not enrolled'}"
        + (f" -> {doc['collector_url']}" if doc["collector_url"] else ""),
        f"running:      {'yes' if doc['running'] else 'no'}",
        f"spool:        {spool['results']} results, {spool['bytes']} bytes",
        f"dropped:      {spool['dropped']} (oldest first, when the spool was full)",
        f"rejected:     {spool['rejected']} (refused by the collector as invalid)",
        f"uploaded:     {doc['uploaded']}",
        f"last upload:  {_when(doc['last_upload_at'])}",
        f"last round:   {_when(doc['last_round_at'])}",
        f"last error:   {doc['last_error'] or 'none'}"
        + (f" at {_when(doc['last_error_at'])}" if doc["last_error"] else ""),
        f"network:      {network}",
    ]
    if doc["network_checked_at"]:
        lines.append(f"checked:      {_when(doc['network_checked_at'])}")
    skew = doc["clock_skew_s"]
    if doc["clock_confirmed_at"]:
        lines.append(
            f"clock:        confirmed {_when(doc['clock_confirmed_at'])}, skew {skew or 0:+.0f}s"
        )
    else:
        lines.append("clock:        not yet confirmed by the collector")
    return "\n".join(lines)


def cmd_install(args: argparse.Namespace) -> int:
    from agent.service import ServiceError, install

    try:
        return install(args)
    except ServiceError as exc:
        return _fail(str(exc))


def cmd_uninstall(args: argparse.Namespace) -> int:
    from agent.service import ServiceError, uninstall

    try:
        return uninstall(args)
    except ServiceError as exc:
        return _fail(str(exc))
