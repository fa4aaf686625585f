"""POST /api/v1/batches: decode, validate and store a batch of measurements.

The work is split so that the event loop only moves bytes: the body is read (and inflated,
with a cap) on the loop, decoded and validated in one pass by msgspec on a worker thread,
and inserted by the store's writer thread in one transaction. The answer goes out only
after that transaction has committed. Ingest is idempotent on the measurement id.

Slots are held only while work is done. Reading a body costs the collector nothing but a
buffer, so it is bounded per agent (``limits.max_uploads_per_agent``, 429 beyond) and in
time (``read_body``'s deadline, 408 for a stalled upload); the in-flight slot that bounds
decoding and storing (``limits.max_inflight_batches``, 503 beyond) is taken only once the
body has arrived. Slow or hostile uploads can therefore never starve the other agents.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

import structlog
from aiohttp import web

from collector.api import is_msgpack, read_body, reply
from collector.state import CONFIG, METRICS, STORE, JsonError, json_error, require_agent
from shared.errors import CodecError, SchemaError
from shared.schema import Measurement, decode_batch, decode_record

log = structlog.get_logger("collector.ingest")

RETRY_AFTER_S: Final = 2


class IngestGate:
    """Bounds the batches in flight: past the bound, ingest sheds load with 503."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0

    def try_enter(self) -> bool:
        if self.busy >= self.limit:
            return False
        self.busy += 1
        return True

    def leave(self) -> None:
        self.busy -= 1


class UploadCounter:
    """Uploads in progress per agent, from the headers to the answer."""

    def __init__(self, per_agent: int) -> None:
        self.per_agent = per_agent
        self.active: dict[str, int] = {}

    @property
    def total(self) -> int:
        return sum(self.active.values())

    def try_enter(self, agent_id: str) -> bool:
        count = self.active.get(agent_id, 0)
        if count >= self.per_agent:
            return False
        self.active[agent_id] = count + 1
        return True

    def leave(self, agent_id: str) -> None:
        count = self.active[agent_id] - 1
        if count:
            self.active[agent_id] = count
        else:
            del self.active[agent_id]


INGEST_GATE: web.AppKey[IngestGate] = web.AppKey("ingest_gate", IngestGate)
UPLOADS: web.AppKey[UploadCounter] = web.AppKey("uploads", UploadCounter)
DECODE_POOL: web.AppKey[ThreadPoolExecutor] = web.AppKey("decode_pool", ThreadPoolExecutor)


class AgentMismatch(Exception):
    """The batch names another agent than the token's."""


@dataclass(frozen=True, slots=True)
class ParsedBatch:
    batch_id: str
    valid: list[Measurement]
    records: list[bytes]  # what the store keeps of each valid one (``decode_record``)
    rejected: list[dict[str, object]] = field(default_factory=list)


def parse_batch(body: bytes, agent_id: str) -> ParsedBatch:
    """Decode and validate a batch (on a worker thread): good results and bad ones by index.

    Raises ``CodecError``/``SchemaError`` when the batch as a whole is unusable and
    ``AgentMismatch`` when it claims to come from another agent.
    """
    env = decode_batch(body)
    if env.agent_id != agent_id:
        raise AgentMismatch
    valid: list[Measurement] = []
    records: list[bytes] = []
    rejected: list[dict[str, object]] = []
    for index, raw in enumerate(env.results):
        try:
            m, record = decode_record(raw)
        except (SchemaError, CodecError) as exc:
            rejected.append({"index": index, "error": str(exc)})
            continue
        valid.append(m)
        records.append(record)
    return ParsedBatch(env.batch_id, valid, records, rejected)


async def post_batch(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    try:
        response = await _ingest(request)
    except JsonError as exc:
        metrics.rejected.labels(exc.error_code).inc()
        metrics.batches.labels(str(exc.status)).inc()
        raise
    metrics.batches.labels(str(response.status)).inc()
    return response


async def _ingest(request: web.Request) -> web.Response:
    app = request.app
    agent = await require_agent(request)
    if not is_msgpack(request.content_type):
        raise json_error(
            415,
            "unsupported_media_type",
            "a batch is sent as application/vnd.msgpack (see docs/wire-format.md)",
        )
    uploads = app[UPLOADS]
    if not uploads.try_enter(agent.agent_id):
        raise json_error(
            429,
            "too_many_uploads",
            f"this agent already has {uploads.per_agent} uploads in progress; send one batch"
            " after the other",
            {"Retry-After": str(RETRY_AFTER_S)},
        )
    try:
        body = await read_body(request, app[CONFIG].limits.max_body_bytes)
        return await _ingest_body(request, agent.agent_id, body)
    finally:
        uploads.leave(agent.agent_id)


async def _ingest_body(request: web.Request, agent_id: str, body: bytes) -> web.Response:
    app = request.app
    gate = app[INGEST_GATE]
    if not gate.try_enter():
        raise json_error(
            503,
            "overloaded",
            f"{gate.limit} batches are being ingested; retry in a few seconds",
            {"Retry-After": str(RETRY_AFTER_S)},
        )
    metrics = app[METRICS]
    metrics.ingest_in_flight.inc()
    try:
        loop = asyncio.get_running_loop()
        try:
            parsed = await loop.run_in_executor(app[DECODE_POOL], parse_batch, body, agent_id)
        except CodecError as exc:
            raise json_error(400, "not_msgpack", exc.detail) from None
        except SchemaError as exc:
            code = "schema_version" if exc.field == "schema_version" else "bad_batch"
            raise json_error(400, code, str(exc)) from None
        except AgentMismatch:
            raise json_error(
                403, "agent_mismatch", "agent_id: a batch can only carry this agent's own results"
            ) from None
        outcome = await app[STORE].insert_measurements(
            agent_id, parsed.batch_id, parsed.valid, time.time(), parsed.records
        )
    finally:
        gate.leave()
        metrics.ingest_in_flight.dec()
    metrics.ingested.inc(outcome.accepted)
    metrics.duplicates.inc(outcome.duplicates)
    if parsed.rejected:
        metrics.rejected.labels("bad_result").inc(len(parsed.rejected))
    log.info(
        "batch_ingested",
        agent_id=agent_id,
        batch_id=parsed.batch_id,
        accepted=outcome.accepted,
        duplicates=outcome.duplicates,
        rejected=len(parsed.rejected),
        bytes=len(body),
    )
    return reply(
        request,
        {
            "accepted": outcome.accepted,
            "duplicates": outcome.duplicates,
            "rejected": parsed.rejected,
        },
    )


async def ingest_resources(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the gate and the decoding threads."""
    app[INGEST_GATE] = IngestGate(app[CONFIG].limits.max_inflight_batches)
    app[UPLOADS] = UploadCounter(app[CONFIG].limits.max_uploads_per_agent)
    pool = ThreadPoolExecutor(2, thread_name_prefix="ingest-decode")
    app[DECODE_POOL] = pool
    yield
    await asyncio.to_thread(pool.shutdown)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/batches", post_batch)
    app.cleanup_ctx.append(ingest_resources)
