"""Moves spooled results to the collector, and deletes only what the collector acknowledged.

A batch is at most ``batch_max_results`` results and ``batch_max_bytes`` of body, under a
fresh ``batch_id``. The spooled records go in as they are (``shared.schema.encode_batch``
writes the envelope around their bytes): the agent never decodes or re-checks what it
wrote, the collector validates each record. The collector dedupes on measurement ids, so
sending a batch again after a lost answer is safe; the spool therefore deletes a batch's
results only after a 2xx answer whose counts cover the whole batch (accepted + duplicates +
rejected-as-invalid). Rejected results are counted (``agent status``) and not sent again:
they can never be accepted.

Failures back off exponentially with full jitter and never retry sooner than a
``Retry-After`` (429, 503). A 413 halves the batch; a single result the collector finds too
large is dropped as rejected.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, Final

import structlog

from agent.collector_api import ApiError, CollectorClient
from agent.config import UploadConfig
from agent.schedule import backoff_delay, parse_retry_after
from agent.spool import Spool, SpooledResult
from agent.state import StatusRecorder
from agent.stopping import wait_or_stop
from shared.schema import encode_batch, is_one_value

log = structlog.get_logger("agent.uploader")

BATCHES_PATH: Final = "/api/v1/batches"
# Room for the batch envelope around the records (agent id, batch id, map headers).
_ENVELOPE_BYTES = 512


@dataclass(frozen=True, slots=True)
class UploadOutcome:
    sent: int  # results in the batch (0: nothing to send)
    acknowledged: bool
    retry_after: float | None = None  # seconds the collector asked us to wait
    error: str | None = None


class Uploader:
    def __init__(
        self,
        spool: Spool,
        collector: CollectorClient,
        agent_id: str,
        config: UploadConfig,
        status: StatusRecorder,
        rng: random.Random | None = None,
        linger_s: float = 1.0,
        timeout_s: float = 60.0,
    ) -> None:
        self._spool = spool
        self._collector = collector
        self._agent_id = agent_id
        self._config = config
        self._status = status
        self._rng = rng or random.Random()
        self._linger_s = linger_s
        self._timeout_s = timeout_s
        self._max_results = config.batch_max_results

    async def run(self, stop: asyncio.Event) -> None:
        """Upload until ``stop`` is set; the caller makes the last attempt with ``flush``."""
        attempt = 0
        while not stop.is_set():
            if len(self._spool) == 0:
                self._spool.changed.clear()
                if await wait_or_stop(stop, None, wake=self._spool.changed):
                    return
                # Let a burst of measurements gather into one batch.
                if len(self._spool) < self._max_results:
                    await wait_or_stop(stop, self._linger_s)
                continue
            outcome = await self.upload_once()
            if outcome.acknowledged:
                attempt = 0
                continue
            delay = backoff_delay(
                attempt,
                self._config.retry_base_s,
                self._config.retry_cap_s,
                self._rng,
                outcome.retry_after,
            )
            attempt += 1
            log.info("upload_retry_later", after_s=round(delay, 1), reason=outcome.error)
            await wait_or_stop(stop, delay)

    async def flush(self, timeout_s: float) -> bool:
        """Upload until the spool is empty, an attempt fails, or ``timeout_s`` passes; True
        when everything was delivered."""
        try:
            async with asyncio.timeout(timeout_s):
                while len(self._spool):
                    outcome = await self.upload_once()
                    if not outcome.acknowledged:
                        return False
        except TimeoutError:
            return False
        return True

    async def upload_once(self) -> UploadOutcome:
        """Send the oldest spooled results as one batch and acknowledge them if accepted."""
        items = await self._spool.peek(
            self._max_results, self._config.batch_max_bytes - _ENVELOPE_BYTES
        )
        if not items:
            return UploadOutcome(0, True)
        results, unreadable = _framed(items)
        if unreadable:
            # A damaged record would break the batch around it: drop it, as rejected.
            log.error("spooled_result_unreadable", results=len(unreadable))
            await self._spool.ack([it.seq for it in unreadable], rejected=len(unreadable))
        if not results:
            return UploadOutcome(0, True)
        batch_id = uuid.uuid4().hex
        # The records go as they were spooled: the collector validates each one.
        body = encode_batch(self._agent_id, batch_id, [it.record for it in results])
        seqs = [it.seq for it in results]
        try:
            res = await self._collector.request(
                "POST", BATCHES_PATH, body=body, timeout_s=self._timeout_s
            )
        except ApiError as exc:
            return await self._failed(exc, seqs, len(body))
        counts = _acknowledgement(res.body)
        if counts is None or sum(counts) != len(results):
            # We cannot tell which results were stored: keep them all and send them again
            # (the collector dedupes on the measurement id).
            self._error("unexpected_answer")
            return UploadOutcome(len(results), False, error="unexpected_answer")
        accepted, duplicates, rejected = counts
        await self._spool.ack(seqs, rejected=rejected)
        self._max_results = min(self._config.batch_max_results, self._max_results * 2)
        cur = self._status.current
        self._status.update(
            last_upload_at=time.time(),
            uploaded=cur.uploaded + accepted + duplicates,
            rejected=cur.rejected + rejected,
            last_error=None,
        )
        if rejected:
            log.warning("results_rejected", rejected=rejected, batch_id=batch_id)
        log.info(
            "batch_uploaded",
            results=len(results),
            accepted=accepted,
            duplicates=duplicates,
            rejected=rejected,
            bytes=len(body),
            batch_id=batch_id,
        )
        return UploadOutcome(len(results), True)

    async def _failed(self, exc: ApiError, seqs: list[int], size: int) -> UploadOutcome:
        if exc.status == 413:
            if len(seqs) == 1:
                # One result larger than the collector takes: it will never be accepted.
                await self._spool.ack(seqs, rejected=1)
                log.error("result_too_large_dropped", bytes=size)
                return UploadOutcome(1, True)
            self._max_results = max(1, len(seqs) // 2)
            log.warning("batch_too_large", results=len(seqs), next_results=self._max_results)
            return UploadOutcome(len(seqs), True)  # not an outage: retry at once, smaller
        retry_after = parse_retry_after(exc.retry_after, time.time())
        self._error(str(exc))
        if exc.status in (401, 403):
            log.error("credentials_refused", status=exc.status, reason=exc.reason)
        return UploadOutcome(len(seqs), False, retry_after=retry_after, error=str(exc))

    def _error(self, text: str) -> None:
        self._status.update(last_error=f"upload: {text}", last_error_at=time.time())


def _framed(items: list[SpooledResult]) -> tuple[list[SpooledResult], list[SpooledResult]]:
    """The records that are each one whole msgpack value, and the others."""
    good: list[SpooledResult] = []
    bad: list[SpooledResult] = []
    for it in items:
        (good if is_one_value(it.record) else bad).append(it)
    return good, bad


def _acknowledgement(doc: Any) -> tuple[int, int, int] | None:
    """(accepted, duplicates, rejected) from a batch answer, or None if it is not one."""
    if not isinstance(doc, dict):
        return None
    accepted, duplicates, rejected = doc.get("accepted"), doc.get("duplicates"), doc.get("rejected")
    if type(accepted) is not int or type(duplicates) is not int or not isinstance(rejected, list):
        return None
    if accepted < 0 or duplicates < 0:
        return None
    return accepted, duplicates, len(rejected)
