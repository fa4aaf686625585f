"""The agent daemon: rounds of measurements, the spool, the uploader, under one TaskGroup.

Each round (aligned to multiples of ``interval_s`` since the epoch, plus jitter):

1. the target list from the collector, or the cached one when the collector is unreachable;
2. ``whoami`` over a direct connection, so the round starts with a known (or honestly
   unknown) network;
3. ``concurrency`` workers measure the targets in a shuffled order, at most
   ``per_host_limit`` at once per host; before each measurement the network is checked
   again if the machine's addresses changed, and the control is fetched (once per URL per
   round; if it cannot be had the measurement is still made and judged inconclusive);
4. every result goes to the durable spool before it counts as done, and wakes the uploader.

SIGTERM or SIGINT set ``stop``: no new measurement starts, those in flight get
``shutdown_grace_s`` to finish and are then abandoned (they were not spooled, so nothing
half-done is kept), and the uploader makes one last attempt bounded by the same grace.
Whatever is not delivered stays in the spool for the next start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import structlog

from agent.collector_api import ApiError, CollectorClient, targets_from_answer
from agent.config import AgentConfig
from agent.identity import Clock, NetworkIdentity
from agent.schedule import first_run, next_run, round_start
from agent.spool import Spool
from agent.state import (
    SPOOL_FILE,
    Credentials,
    StatusRecorder,
    Target,
    ensure_state_dir,
    load_fingerprint_doc,
    load_status,
    load_targets,
    lock_state_dir,
    save_fingerprint_doc,
    save_targets,
)
from agent.stopping import wait_or_stop
from agent.uploader import Uploader
from shared.blockpages import FingerprintBox, fingerprints_from_json
from shared.errors import ConfigError
from shared.schema import ControlFacts, Measurement, NetworkFacts

log = structlog.get_logger("agent.runner")

MeasureFn = Callable[
    [str, NetworkFacts | None, ControlFacts | None, float | None], Awaitable[Measurement]
]
ControlFn = Callable[[str], Awaitable[ControlFacts | None]]
STATUS_EVERY_S = 2.0


@dataclass(frozen=True, slots=True)
class Probing:
    """How the runner measures: the probes' ``measure`` and the control client, bound to
    this agent's options and sessions."""

    measure: MeasureFn
    control: ControlFn
    # Built once before the first round: what every measurement shares (TLS contexts with
    # the system's roots). Left to the first measurements, each would build its own.
    warm_up: Callable[[], Awaitable[object]] | None = None
    # The blockpage fingerprints measurements use; the runner adds the collector's set.
    fingerprints: FingerprintBox | None = None


ProbingFactory = Callable[[AgentConfig, CollectorClient], Probing]


def real_probing(config: AgentConfig, collector: CollectorClient) -> Probing:
    """The probes of shared/probes, with the options from ``config``."""
    from agent.control_client import request_control
    from shared.blockpages import load_fingerprint_set
    from shared.probes.tls import tls_contexts
    from shared.probes.web import ProbeOptions, measure

    p = config.probes
    options = ProbeOptions(
        timeout_s=p.timeout_s,
        resolver=p.resolver,
        system_resolver=p.system_resolver,
        ca_file=p.ca_file,
    )
    box = FingerprintBox(load_fingerprint_set(list(p.fingerprints)))

    async def measure_one(
        url: str,
        network: NetworkFacts | None,
        control: ControlFacts | None,
        clock_age_s: float | None,
    ) -> Measurement:
        return await measure(
            url,
            options,
            network=network,
            control=control,
            clock_age_s=clock_age_s,
            fingerprints=box.current,
        )

    async def control_for(url: str) -> ControlFacts | None:
        return (await request_control(collector, url, p.timeout_s + 5.0)).facts

    return Probing(measure_one, control_for, lambda: tls_contexts(p.ca_file), box)


@dataclass(frozen=True, slots=True)
class Round:
    """What the steps of one round share: the run's stop, network identity, probes and
    collector, and the controls asked for in this round (once per URL)."""

    stop: asyncio.Event
    identity: NetworkIdentity
    probing: Probing
    collector: CollectorClient
    controls: dict[str, asyncio.Future[ControlFacts | None]] = field(default_factory=dict)

    def control(self, url: str) -> asyncio.Future[ControlFacts | None]:
        """The control for ``url``, asked for at its first measurement of the round."""
        fut = self.controls.get(url)
        if fut is None:
            fut = self.controls[url] = asyncio.ensure_future(self.probing.control(url))
        return fut


class Agent:
    """One agent process: build it, then ``await agent.run(stop)``."""

    def __init__(
        self,
        config: AgentConfig,
        creds: Credentials,
        state_dir: Path,
        probing: ProbingFactory = real_probing,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.creds = creds
        self.state_dir = state_dir
        self._probing_factory = probing
        self._rng = rng or random.Random()
        self.clock = Clock()
        self.spool = Spool(state_dir / SPOOL_FILE, config.spool.max_bytes)
        self.status = StatusRecorder(state_dir, dataclasses.replace(load_status(state_dir)))

    async def run(self, stop: asyncio.Event) -> None:
        """Measure and upload until ``stop`` is set, then shut down within the grace."""
        ensure_state_dir(self.state_dir)
        lock = lock_state_dir(self.state_dir)
        try:
            await self._run_locked(stop)
        finally:
            os.close(lock)

    async def _run_locked(self, stop: asyncio.Event) -> None:
        cfg = self.config
        await self.spool.open()
        self.status.update(pid=os.getpid())
        collector = await CollectorClient.open(
            self.creds.collector_url, self.creds.token, cfg.upload
        )
        try:
            identity = NetworkIdentity(collector, self.clock)
            probing = self._probing_factory(cfg, collector)
            uploader = Uploader(
                self.spool, collector, self.creds.agent_id, cfg.upload, self.status, rng=self._rng
            )
            if probing.warm_up is not None:
                await probing.warm_up()
            stats = await self.spool.stats()
            log.info(
                "agent_started",
                agent_id=self.creds.agent_id,
                spooled=stats.results,
                concurrency=cfg.concurrency,
                interval_s=cfg.interval_s,
            )
            async with asyncio.TaskGroup() as tg:
                uploading = tg.create_task(uploader.run(stop))
                # An upload in flight when stop comes gets the grace to finish, then is cut
                # short (the spool deletes only on an answer, so nothing is lost) and the
                # bounded flush below takes over.
                tg.create_task(_cancel_after_stop(stop, cfg.shutdown_grace_s, uploading))
                new_round = functools.partial(Round, stop, identity, probing, collector)
                tg.create_task(self._scheduler(stop, new_round))
                tg.create_task(self._status_writer(stop, identity))
            delivered = await uploader.flush(cfg.shutdown_grace_s)
            stats = await self.spool.stats()
            log.info("agent_stopped", delivered_all=delivered, spooled=stats.results)
        finally:
            self.status.update(pid=None)
            await self._save_status(identity=None)
            await collector.close()
            await self.spool.close()

    # --- rounds ----------------------------------------------------------------------------

    async def _scheduler(self, stop: asyncio.Event, new_round: Callable[[], Round]) -> None:
        cfg = self.config
        when = first_run(
            time.time(), cfg.interval_s, cfg.jitter_s, self.status.current.last_round_at, self._rng
        )
        while not stop.is_set():
            delay = when - time.time()
            if delay > 0 and await wait_or_stop(stop, delay):
                return
            started = time.time()
            self.status.update(last_round_at=round_start(started, cfg.interval_s))
            await self._round(new_round())
            finished = time.time()
            if finished - round_start(started, cfg.interval_s) > cfg.interval_s:
                log.warning("round_overran", seconds=round(finished - started, 1))
            when = next_run(finished, cfg.interval_s, cfg.jitter_s, self._rng)

    async def _round(self, rnd: Round) -> None:
        """One round, cut short ``shutdown_grace_s`` after ``stop`` whatever it is doing."""
        try:
            async with asyncio.timeout(None) as deadline:
                async with asyncio.TaskGroup() as tg:
                    grace = tg.create_task(self._arm_grace(rnd.stop, deadline))
                    await self._measure_round(rnd)
                    grace.cancel()
        except TimeoutError:
            log.warning("measurements_abandoned", reason="shutdown")
        finally:
            for fut in rnd.controls.values():
                fut.cancel()

    async def _measure_round(self, rnd: Round) -> None:
        targets = await self._targets(rnd.collector)
        if rnd.probing.fingerprints is not None:
            await self._fingerprints(rnd.collector, rnd.probing.fingerprints)
        if not targets:
            log.warning("no_targets")
            return
        await rnd.identity.refresh()
        order = list(targets)
        # Shuffled: a host listed many times does not hold up the workers behind it, and
        # no site is always measured last.
        self._rng.shuffle(order)
        queue: asyncio.Queue[Target] = asyncio.Queue()
        for t in order:
            queue.put_nowait(t)
        hosts: dict[str, asyncio.Semaphore] = {}
        log.info("round_started", targets=len(order))
        measured = 0

        async def worker() -> None:
            nonlocal measured
            while not rnd.stop.is_set():
                try:
                    target = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                host = (urlsplit(target.url).hostname or "").lower()
                sem = hosts.setdefault(host, asyncio.Semaphore(self.config.per_host_limit))
                async with sem:
                    if await self._measure_one(target.url, rnd):
                        measured += 1

        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(min(self.config.concurrency, len(order))):
                    tg.create_task(worker())
        finally:
            log.info("round_finished", measured=measured, skipped=queue.qsize())

    async def _arm_grace(self, stop: asyncio.Event, deadline: asyncio.Timeout) -> None:
        await stop.wait()
        deadline.reschedule(asyncio.get_running_loop().time() + self.config.shutdown_grace_s)

    async def _measure_one(self, url: str, rnd: Round) -> bool:
        try:
            network = await rnd.identity.current()
            control = await asyncio.shield(rnd.control(url))
            m = await rnd.probing.measure(url, network, control, self.clock.age_s())
            if self.clock.skew_s:
                # The collector's clock is the reference: results line up across agents.
                m = msgspec.structs.replace(m, measured_at=self.clock.corrected(m.measured_at))
            await self.spool.put(m)
        except Exception:
            # A bug in one measurement must not stop the agent; the traceback is logged
            # (structlog scrubs addresses from it).
            log.exception("measurement_crashed")
            return False
        log.info("result_spooled", id=m.id, domain=m.domain, blocking=m.blocking.value)
        return True

    async def _targets(self, collector: CollectorClient) -> list[Target]:
        try:
            res = await collector.request("GET", "/api/v1/targets")
            urls = targets_from_answer(res.body)
            if urls is None:
                raise ApiError("unreadable_answer", status=res.status)
        except ApiError as exc:
            cached = await asyncio.to_thread(load_targets, self.state_dir)
            log.warning("targets_from_cache", reason=str(exc), targets=len(cached or []))
            self.status.update(last_error=f"targets: {exc}", last_error_at=time.time())
            return cached or []
        targets = [Target(u) for u in urls]
        await asyncio.to_thread(save_targets, self.state_dir, targets)
        return targets

    async def _fingerprints(self, collector: CollectorClient, box: FingerprintBox) -> None:
        """The collector's fingerprint set joins the agent's own; cached like the targets.
        Asked for with the ETag of the set in use: an unchanged set is a 304, neither sent
        nor written again. A collector without one (404) leaves the agent's own set alone."""
        fresh = False
        try:
            res = await collector.request(
                "GET",
                "/api/v1/fingerprints",
                extra_headers=(
                    {"If-None-Match": f'"{box.collector_digest}"'} if box.collector_digest else None
                ),
            )
            doc, fresh = res.body, True
        except ApiError as exc:
            if exc.status in (304, 404) or box.collector_digest is not None:
                return  # unchanged, none at all, or unreachable: keep the set in use
            doc = await asyncio.to_thread(load_fingerprint_doc, self.state_dir)
            log.warning("fingerprints_from_cache", reason=str(exc), cached=doc is not None)
        if doc is None:
            return
        try:
            collector_set = await asyncio.to_thread(fingerprints_from_json, doc)
        except ConfigError as exc:
            log.warning("fingerprints_refused", reason=str(exc))
            return
        if fresh:
            await asyncio.to_thread(save_fingerprint_doc, self.state_dir, doc)
        if box.current != box.local.merged(collector_set):
            await asyncio.to_thread(box.use_collector_set, collector_set)
            log.info("fingerprints_updated", fingerprints=len(box.current))
        else:
            box.collector_digest = collector_set.digest()

    # --- status ------------------------------------------------------------------------------

    async def _status_writer(self, stop: asyncio.Event, identity: NetworkIdentity) -> None:
        while not stop.is_set():
            await self._save_status(identity)
            await wait_or_stop(stop, STATUS_EVERY_S)
        await self._save_status(identity)

    async def _save_status(self, identity: NetworkIdentity | None) -> None:
        if identity is not None:
            snap = identity.snapshot()
            if (snap.network, snap.checked_at) != (
                self.status.current.network,
                self.status.current.network_checked_at,
            ):
                self.status.update(network=snap.network, network_checked_at=snap.checked_at)
        if (self.clock.skew_s, self.clock.confirmed_wall) != (
            self.status.current.clock_skew_s,
            self.status.current.clock_confirmed_at,
        ):
            self.status.update(
                clock_skew_s=self.clock.skew_s, clock_confirmed_at=self.clock.confirmed_wall
            )
        await self.status.save(time.time())


async def _cancel_after_stop(stop: asyncio.Event, grace_s: float, task: asyncio.Task[None]) -> None:
    await stop.wait()
    try:
        async with asyncio.timeout(grace_s):
            await asyncio.shield(task)
    except TimeoutError:
        task.cancel()


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT ask for a clean shutdown."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def run_agent(
    config: AgentConfig,
    creds: Credentials,
    state_dir: Path,
    probing: ProbingFactory = real_probing,
) -> None:
    """``filterwatch agent run``: the daemon until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    install_stop_signals(stop)
    await Agent(config, creds, state_dir, probing).run(stop)
