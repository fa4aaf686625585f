"""Typed application state and the request helpers every collector endpoint shares.

Endpoints written by different parts (ingest, control, analyst queries) reach the
configuration, the store and the caller's credentials only through this module.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping

from aiohttp import web

from collector.auth import bearer_token, hash_secret, matches_any
from collector.config import CollectorConfig
from collector.metrics import Metrics
from collector.netdb import NetDb
from collector.store.base import AgentRecord, Store
from collector.targets import TargetList
from shared.blockpages import Fingerprints
from shared.schema import NetworkFacts

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CONFIG: web.AppKey[CollectorConfig] = web.AppKey("config", CollectorConfig)
STORE: web.AppKey[Store] = web.AppKey("store", Store)
PSEUDONYM_KEY: web.AppKey[bytes] = web.AppKey("pseudonym_key", bytes)
NETDB: web.AppKey[NetDb] = web.AppKey("netdb", NetDb)
FINGERPRINTS: web.AppKey[Fingerprints] = web.AppKey("fingerprints", Fingerprints)

JSON_CONTENT_TYPE = "application/json"


class JsonError(web.HTTPException):
    """An HTTP error whose body is ``{"error": code, "detail": detail}`` as JSON."""

    def __init__(
        self, status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        # HTTPException reads the status from ``status_code``: set it per instance.
        self.status_code = status
        self.error_code = code
        self.detail = detail
        super().__init__(
            headers=dict(headers) if headers else None,
            text=json.dumps({"error": code, "detail": detail}),
            content_type=JSON_CONTENT_TYPE,
        )


def json_error(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> web.HTTPException:
    """An exception to ``raise``: status ``status``, JSON body ``{"error", "detail"}``."""
    return JsonError(status, code, detail, headers)


def _bearer(request: web.Request) -> str:
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        raise json_error(
            401,
            "unauthorized",
            "send 'Authorization: Bearer <token>'",
            {"WWW-Authenticate": 'Bearer realm="filterwatch"'},
        )
    return token


async def require_agent(request: web.Request) -> AgentRecord:
    """The agent whose token the request carries: 401 if missing or unknown, 403 if revoked."""
    token = _bearer(request)
    agent = await request.app[STORE].agent_by_token(hash_secret(token))
    if agent is None:
        raise json_error(
            401,
            "invalid_token",
            "the agent token is not known to this collector; enroll again",
            {"WWW-Authenticate": 'Bearer realm="filterwatch", error="invalid_token"'},
        )
    if agent.revoked:
        raise json_error(403, "agent_revoked", "this agent has been revoked by the collector")
    return agent


async def require_analyst(request: web.Request) -> None:
    """Let the request through if it carries an analyst token: 401 if it carries none or an
    unknown one, 403 if it carries an agent's token (agents may not query)."""
    token = _bearer(request)
    if matches_any(token, request.app[CONFIG].analyst_tokens):
        return
    store = request.app[STORE]
    token_hash = hash_secret(token)
    if await store.analyst_token_exists(token_hash):
        return
    if await store.agent_by_token(token_hash) is not None:
        raise json_error(403, "forbidden", "an agent token cannot be used for analyst endpoints")
    raise json_error(
        401,
        "invalid_token",
        "not an analyst token of this collector (make one: filterwatch collector analyst-token)",
        {"WWW-Authenticate": 'Bearer realm="filterwatch", error="invalid_token"'},
    )


def caller_network(request: web.Request) -> NetworkFacts:
    """The caller's network by the IP-to-ASN table. The address is looked up and dropped:
    never store or log it."""
    netdb = request.app.get(NETDB)
    if netdb is None:
        return {"asn": 0, "cc": "ZZ", "network_name": ""}
    net = netdb.lookup(caller_address(request))
    return {"asn": net["asn"], "cc": net["cc"], "network_name": net["network_name"]}


def caller_address(request: web.Request) -> str | None:
    """The caller's address: the peer's, or behind a trusted load balancer (listen.
    trusted_proxies) the rightmost X-Forwarded-For entry that is not one of those proxies.
    Only ever looked up, never kept."""
    remote = request.remote
    trusted = _trusted_proxies(request.app)
    if not trusted or not _within(remote, trusted):
        return remote
    hops = [h.strip() for v in request.headers.getall("X-Forwarded-For", []) for h in v.split(",")]
    for hop in reversed(hops):
        if not _within(hop, trusted):
            return hop
    return remote


def _trusted_proxies(app: web.Application) -> tuple[IPNetwork, ...]:
    config = app.get(CONFIG)
    return () if config is None else config.listen.trusted_networks


def _within(address: str | None, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address((address or "").split("%", 1)[0])
    except ValueError:
        return False
    return any(ip in net for net in networks)


# Keys private to the collector core (other parts should not need them).
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
TARGETS: web.AppKey[TargetList] = web.AppKey("targets", TargetList)
