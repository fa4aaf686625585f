"""Agent endpoints: enroll, whoami, targets."""

from __future__ import annotations

import time
from typing import Final

import structlog
from aiohttp import web

from collector.api import decode_small_body, read_body, reply
from collector.auth import hash_enroll_code, hash_secret, new_agent_id, new_agent_token
from collector.state import (
    FINGERPRINTS,
    STORE,
    TARGETS,
    caller_network,
    json_error,
    require_agent,
)

log = structlog.get_logger("collector.agents")

_ENROLL_BODY_LIMIT: Final = 16 * 1024


async def enroll(request: web.Request) -> web.Response:
    """Trade a one-time enrollment code for an agent id and token."""
    body = await read_body(request, _ENROLL_BODY_LIMIT, compressed_ok=False)
    data = decode_small_body(request, body)
    code = data.get("code")
    if not isinstance(code, str) or not code.strip() or len(code) > 128:
        raise json_error(400, "bad_body", "code: expected the enrollment code as a string")
    agent_id = new_agent_id()
    token = new_agent_token()
    agent = await request.app[STORE].redeem_enroll_code(
        hash_enroll_code(code), time.time(), agent_id, hash_secret(token)
    )
    if agent is None:
        raise json_error(
            403,
            "invalid_code",
            "the enrollment code is unknown, used up or expired; ask the collector's operator",
        )
    log.info("agent_enrolled", agent_id=agent.agent_id, cc=agent.cc)
    return reply(request, {"agent_id": agent.agent_id, "token": token})


async def whoami(request: web.Request) -> web.Response:
    """The caller's network as the collector sees it. The address is never stored."""
    await require_agent(request)
    net = caller_network(request)
    return reply(
        request,
        {
            "asn": net["asn"],
            "cc": net["cc"],
            "network_name": net["network_name"],
            "server_time": time.time(),
        },
    )


async def targets(request: web.Request) -> web.Response:
    """The target list for the agent's country: the enrollment code's, else its network's."""
    agent = await require_agent(request)
    cc = agent.cc or caller_network(request)["cc"]
    target_list = request.app[TARGETS]
    legend = target_list.categories
    items = [
        {**t.to_json(), "category_description": legend[t.category_code]}
        if t.category_code in legend
        else t.to_json()
        for t in target_list.for_country(cc)
    ]
    return reply(request, items)


async def fingerprints(request: web.Request) -> web.Response:
    """The blockpage fingerprint set agents measure with (the control uses it too)."""
    await require_agent(request)
    found = request.app[FINGERPRINTS]
    etag = f'"{found.digest()}"'
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag})
    response = reply(request, found.to_json())
    response.headers["ETag"] = etag
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/enroll", enroll)
    app.router.add_get("/api/v1/whoami", whoami)
    app.router.add_get("/api/v1/targets", targets)
    app.router.add_get("/api/v1/fingerprints", fingerprints)
