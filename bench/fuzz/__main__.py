"""The long fuzz campaign against a live collector, with the README's reliability figures.

    .venv/bin/python -m bench.fuzz [--inputs 100000] [--seed 1] [--raw-share 0.2]

A real collector (``filterwatch collector serve``, SQLite in a temporary directory, the
control closed to everything beyond loopback) gets ``--inputs`` inputs from
``tests/fuzz_inputs.py``: mutated real batches and random requests to every endpoint over
HTTP, and malformed requests (broken request lines, headers, framing, bare-LF line endings)
on raw sockets, every one carrying an agent token. Then, on the same collector: 16 uploads
stalled after one byte while an honest agent uploads, and the SSRF forms of the control's
test table through ``collector.outbound``. It prints the figures and exits 1 if any input
got a 5xx, the collector died, the rows stored differ from the results accepted, or a token
reached the log. Nothing leaves the loopback interface.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import random
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from collector.outbound import refusal
from tests.collector.test_control import SPECIAL_FORMS
from tests.fuzz_inputs import batch, http_request, malformed_request
from tests.live_collector import LiveCollector, live_collector, request

CONFIG = (
    "control: {resolver: '127.0.0.1:9', allow_public: false, timeout_s: 1}\n"
    "limits: {body_timeout_s: 2}\n"
)
HTTP_WORKERS = 4
RAW_WORKERS = 24
STALLED = 16


class Tally:
    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.raw_answers: Counter[str] = Counter()
        self.accepted = 0
        self.inputs = 0
        self.agents: list[tuple[str, str, bytes]] = []


async def _http_worker(
    live: LiveCollector,
    agent: tuple[str, str, bytes],
    seeds: asyncio.Queue[int],
    seed: int,
    tally: Tally,
) -> None:
    agent_id, token, real_batch = agent
    while not seeds.empty():
        n = seeds.get_nowait()
        fuzz = http_request(random.Random(seed * 10**9 + n), agent_id, real_batch)
        try:
            status, body = await asyncio.to_thread(
                request, live.port, fuzz.method, fuzz.path, fuzz.body, fuzz.content_type, token
            )
        except (OSError, http.client.HTTPException):
            status, body = -1, b""  # the collector closed the connection (after a 4xx, say)
        tally.statuses[status] += 1
        tally.inputs += 1
        if fuzz.kind == "batch" and status == 200:
            tally.accepted += json.loads(body)["accepted"]
        if status >= 500:
            print(f"fuzz: {status} for input {n}: {body[:200]!r}", file=sys.stderr)


async def _raw_worker(live: LiveCollector, token: str, seeds: asyncio.Queue[int], seed: int,
                      tally: Tally) -> None:  # fmt: skip
    while not seeds.empty():
        n = seeds.get_nowait()
        data = malformed_request(random.Random(seed * 10**9 + n), token)
        answer = b""
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        except OSError:
            tally.raw_answers["connect failed"] += 1
            continue
        try:
            writer.write(data)
            await writer.drain()
            async with asyncio.timeout(1.0):
                answer = await reader.read(65536)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
        tally.inputs += 1
        if answer.startswith(b"HTTP/1."):
            status = int(answer.split(b" ", 2)[1])
            tally.raw_answers[str(status)] += 1
            tally.statuses[status] += 1
            if status >= 500:
                print(f"fuzz: raw input {n} got {status}", file=sys.stderr)
        else:
            tally.raw_answers["closed or waiting"] += 1


async def _campaign(live: LiveCollector, inputs: int, seed: int, raw_share: float) -> Tally:
    tally = Tally()
    agents = tally.agents
    for worker, (agent_id, token) in enumerate(live.enroll_many(HTTP_WORKERS + STALLED // 2 + 1)):
        agents.append((agent_id, token, batch(random.Random(seed + worker), agent_id, 20)))
    raw_count = int(inputs * raw_share)
    http_seeds: asyncio.Queue[int] = asyncio.Queue()
    raw_seeds: asyncio.Queue[int] = asyncio.Queue()
    for n in range(inputs - raw_count):
        http_seeds.put_nowait(n)
    for n in range(raw_count):
        raw_seeds.put_nowait(inputs + n)
    await asyncio.gather(
        *(_http_worker(live, agents[i], http_seeds, seed, tally) for i in range(HTTP_WORKERS)),
        *(_raw_worker(live, agents[0][1], raw_seeds, seed, tally) for _ in range(RAW_WORKERS)),
    )
    return tally


async def _stalled_uploads(live: LiveCollector, agents: list[tuple[str, str, bytes]]) -> float:
    """Seconds for an honest batch to be accepted while 16 uploads stall after one byte."""
    writers = []
    for _, token, _ in agents[HTTP_WORKERS : HTTP_WORKERS + STALLED // 2]:
        for _ in range(2):
            _, writer = await asyncio.open_connection("127.0.0.1", live.port)
            writer.write(
                b"POST /api/v1/batches HTTP/1.1\r\nHost: c\r\nContent-Type: application/vnd.msgpack"
                b"\r\nAuthorization: Bearer "
                + token.encode()
                + b"\r\nContent-Length: 4096\r\n\r\n\x84"
            )
            await writer.drain()
            writers.append(writer)
    agent_id, token, _ = agents[-1]
    body = batch(random.Random("the honest agent"), agent_id, 100)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/vnd.msgpack",
               "Accept": "application/json"}  # fmt: skip
    started = time.perf_counter()
    async with (
        aiohttp.ClientSession(trust_env=False) as session,
        session.post(live.url + "/api/v1/batches", data=body, headers=headers) as resp,
    ):
        answer = await resp.json()
    elapsed = time.perf_counter() - started
    for writer in writers:
        writer.close()
    if resp.status != 200 or answer["accepted"] != 100:
        raise SystemExit(f"bench: the honest batch was refused: {resp.status} {answer}")
    return elapsed


def _ssrf_forms() -> tuple[int, int, int]:
    """(forms refused, forms, classes refused) for the control's table of SSRF forms."""
    refused = classes = 0
    seen: set[str] = set()
    for url in SPECIAL_FORMS:
        host = re.match(r"http://\[?([^\]/]+)\]?/", url)
        assert host is not None
        why = refusal(host.group(1))
        if why is not None:
            refused += 1
            kind = why.reason.split("(")[-1].rstrip(")") if "(" in why.reason else why.reason
            seen.add(kind)
    classes = len(seen)
    return refused, len(SPECIAL_FORMS), classes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--raw-share", type=float, default=0.2, help="share sent on raw sockets")
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="fw-fuzz-") as work,
        live_collector(Path(work), CONFIG) as live,
    ):
        started = time.perf_counter()
        tally = asyncio.run(_campaign(live, args.inputs, args.seed, args.raw_share))
        fuzz_s = time.perf_counter() - started
        alive = live.alive()
        stored = live.stored()
        stalled_s = asyncio.run(_stalled_uploads(live, tally.agents))
        log = live.log_text()
        tokens_in_log = sum(log.count(token) for _, token, _ in tally.agents)
        tracebacks = log.count("Traceback")
    refused, forms, classes = _ssrf_forms()
    server_errors = sum(n for status, n in tally.statuses.items() if status >= 500)
    figures: dict[str, Any] = {
        "inputs": tally.inputs,
        "seconds": round(fuzz_s, 1),
        "http_5xx": server_errors,
        "statuses": dict(sorted(tally.statuses.items())),
        "raw_answers": dict(sorted(tally.raw_answers.items())),
        "results_accepted": tally.accepted,
        "rows_stored": stored,
        "collector_alive": alive,
        "tokens_in_log": tokens_in_log,
        "tracebacks_in_log": tracebacks,
        "stalled_uploads": STALLED,
        "honest_batch_accepted_s": round(stalled_s, 3),
        "ssrf_forms_refused": f"{refused}/{forms}",
        "ssrf_classes_refused": classes,
    }
    print(json.dumps(figures, indent=2))
    ok = (
        server_errors == 0
        and alive
        and tally.accepted == stored
        and tokens_in_log == 0
        and tracebacks == 0
        and refused == forms
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
