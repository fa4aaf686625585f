"""A small stand-in collector on loopback for the agent's unit tests: it speaks the agent
endpoints of design.md section 3, dedupes batches on measurement ids, and can be told to
answer the next batches with errors (429 with Retry-After, 503, 413, ...).

End-to-end tests use the real collector instead (tests/agent/test_daemon.py)."""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field

from aiohttp import web

from shared.codec import CONTENT_TYPE, decode, encode
from shared.schema import decode_batch, decode_measurement

TOKEN = "t0ken-for-tests"
AGENT_ID = "agent-test-1"


@dataclass
class CollectorDouble:
    targets: list[str] = field(default_factory=list)
    network: dict[str, object] = field(
        default_factory=lambda: {"asn": 64500, "cc": "IR", "network_name": "Test ISP"}
    )
    date_header: str | None = None  # overrides the Date of whoami answers
    # Errors to answer the next batches with, in order: (status, headers).
    batch_errors: collections.deque[tuple[int, dict[str, str]]] = field(
        default_factory=collections.deque
    )
    stored: dict[str, int] = field(default_factory=dict)  # measurement id -> times received
    batches: list[str] = field(default_factory=list)  # batch ids, in arrival order
    batch_sizes: list[int] = field(default_factory=list)
    measured_at: dict[str, float] = field(default_factory=dict)  # measurement id -> its time
    records: list[bytes] = field(default_factory=list)  # every result's bytes, as received
    whoami_calls: int = 0
    reject_urls: frozenset[str] = frozenset()  # results of these URLs are "invalid"
    batch_stored: asyncio.Event = field(default_factory=asyncio.Event)
    fingerprints: dict[str, object] | None = None  # GET /api/v1/fingerprints; None: 404
    fingerprints_unchanged: int = 0  # answers 304 to If-None-Match

    async def wait_for(self, ids: set[str]) -> None:
        """Return once every measurement id in ``ids`` has been stored."""
        while not ids <= self.stored.keys():
            self.batch_stored.clear()
            await self.batch_stored.wait()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v1/enroll", self.enroll)
        app.router.add_get("/api/v1/whoami", self.whoami)
        app.router.add_get("/api/v1/targets", self.get_targets)
        app.router.add_get("/api/v1/fingerprints", self.get_fingerprints)
        app.router.add_post("/api/v1/batches", self.post_batch)
        return app

    def _auth(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            raise web.HTTPUnauthorized(text='{"error": "invalid_token"}')

    async def enroll(self, request: web.Request) -> web.Response:
        doc = decode(await request.read())
        if doc.get("code") != "good-code":
            return web.json_response({"error": "bad_code", "detail": "unknown"}, status=403)
        return web.json_response({"agent_id": AGENT_ID, "token": TOKEN})

    async def whoami(self, request: web.Request) -> web.Response:
        self._auth(request)
        self.whoami_calls += 1
        headers = {"Date": self.date_header} if self.date_header else None
        return web.json_response(self.network, headers=headers)

    async def get_targets(self, request: web.Request) -> web.Response:
        self._auth(request)
        return web.json_response({"targets": [{"url": u} for u in self.targets]})

    async def get_fingerprints(self, request: web.Request) -> web.Response:
        self._auth(request)
        if self.fingerprints is None:
            return web.json_response({"error": "not_found"}, status=404)
        etag = f'"{self.fingerprints.get("digest")}"'
        if request.headers.get("If-None-Match") == etag:
            self.fingerprints_unchanged += 1
            return web.Response(status=304, headers={"ETag": etag})
        return web.json_response(self.fingerprints, headers={"ETag": etag})

    async def post_batch(self, request: web.Request) -> web.Response:
        self._auth(request)
        if request.content_type != CONTENT_TYPE:
            return web.json_response({"error": "unsupported_media_type"}, status=415)
        if self.batch_errors:
            status, headers = self.batch_errors.popleft()
            return web.json_response(
                {"error": "busy", "detail": ""}, status=status, headers=headers
            )
        env = decode_batch(await request.read())
        self.batches.append(env.batch_id)
        self.batch_sizes.append(len(env.results))
        accepted = duplicates = 0
        rejected = []
        for i, raw in enumerate(env.results):
            self.records.append(bytes(raw))
            rec = decode_measurement(raw)
            if rec.url in self.reject_urls:
                rejected.append({"index": i, "error": "url: not allowed"})
                continue
            seen = rec.id in self.stored
            self.measured_at[rec.id] = rec.measured_at
            self.stored[rec.id] = self.stored.get(rec.id, 0) + 1
            if seen:
                duplicates += 1
            else:
                accepted += 1
        self.batch_stored.set()
        body = {"accepted": accepted, "duplicates": duplicates, "rejected": rejected}
        return web.Response(body=encode(body), content_type=CONTENT_TYPE)
