"""``filterwatch import ooni`` throughput on generated OONI-shaped measurements.

    .venv/bin/python -m bench.import [--count 1000000] [--format parquet]

Writes ``--count`` web_connectivity measurements in OONI's layout (test version 0.4.1
keys: queries, tcp_connect, tls_handshakes, requests with a small body, control) as one
JSONL.gz file under ``bench/import/data/`` (kept for the next run with the same count),
then times ``filterwatch import ooni FILE --out bench/import/out/ooni.<format>`` in this
process: documents per second from the first byte read to the last row written (wall
clock, and per CPU second, which a shared machine's load does not change), and the peak
memory. The mix: 70 % accessible, 10 % DNS injection (10.10.34.36, Iran), 10 % TLS
resets, 5 % blockpages, 5 % sites down, over 40 networks and 30 days; 100 measurements per
report (an OONI run). Nothing touches the network.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from filterwatch.cli import main

HERE = Path(__file__).resolve().parent
BODY = "<html><head><title>Example news site</title></head><body>" + "x" * 900 + "</body></html>"
BLOCKPAGE = '<html><iframe src="http://10.10.34.34?type=Invalid Site"></iframe></html>'
CC: list[tuple[str, list[int]]] = [
    ("IR", [197207, 58224, 44244, 31549, 12880, 16322, 43754, 48159, 57218, 25184]),
    ("RU", [12389, 8402, 3216, 31133, 20485, 8359, 12714, 9049, 29497, 42610]),
    ("KZ", [9198, 21299, 48716, 29355, 35104, 206026, 50482, 41798, 39824, 35168]),
    ("IT", [30722, 3269, 1267, 137, 12874, 8612, 20746, 16232, 6762, 5602]),
]


def _measurement(i: int, rng: random.Random) -> dict[str, Any]:
    cc, asns = CC[i % len(CC)]
    asn = asns[(i // 7) % len(asns)]
    day = (i // 977) % 30 + 1
    kind = rng.random()
    host = f"site{(i % 100) * 20 + (i // 100) % 20}.example"  # distinct within a report
    url = f"https://{host}/"
    real = f"203.0.113.{rng.randrange(1, 255)}"
    answers = [real]
    blocking: bool | str = False
    accessible = True
    status = 200
    body: str | None = BODY
    failure: str | None = None
    tls_failure: str | None = None
    if kind < 0.10 and cc == "IR":
        answers, blocking, accessible, status, body = ["10.10.34.36"], "dns", False, 0, None
        failure = "generic_timeout_error"
    elif kind < 0.20:
        blocking, accessible, status, body = "http-failure", False, 0, None
        failure = tls_failure = "connection_reset"
    elif kind < 0.25:
        url = f"http://{host}/"
        blocking, accessible, body = "http-diff", False, BLOCKPAGE
    elif kind < 0.30:
        blocking, accessible, status, body = False, False, 0, None
        failure = "generic_timeout_error"
    report = f"202601{day:02d}T000000Z_webconnectivity_{cc}_{asn}_n1_{i // 100:012d}"
    return {
        "data_format_version": "0.2.0",
        "input": url,
        "measurement_start_time": f"2026-01-{day:02d} {i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}",
        "test_start_time": f"2026-01-{day:02d} 00:00:00",
        "probe_asn": f"AS{asn}",
        "probe_cc": cc,
        "probe_network_name": f"{cc} network {asn}",
        "report_id": report,
        "software_name": "ooniprobe-cli",
        "software_version": "3.20.0",
        "test_name": "web_connectivity",
        "test_version": "0.4.1",
        "test_keys": {
            "queries": [
                {"hostname": host, "query_type": "A", "engine": "system", "failure": None,
                 "answers": [{"answer_type": "A", "ipv4": a, "ttl": None} for a in answers]}
            ],
            "tcp_connect": [
                {"ip": a, "port": 443, "status": {"success": failure is None, "failure": None,
                                                  "blocked": False}}
                for a in answers
            ],
            "tls_handshakes": [
                {"address": f"{answers[0]}:443", "server_name": host, "failure": tls_failure,
                 "tls_version": "TLSv1.3", "no_tls_verify": False}
            ],
            "requests": [
                {"request": {"url": url, "method": "GET", "headers": {"Accept": "*/*"}},
                 "failure": failure,
                 "response": {"code": status, "body": body,
                              "headers": {"Content-Type": "text/html", "Server": "nginx"}}}
            ],
            "control": {
                "dns": {"addrs": [real], "failure": None},
                "tcp_connect": {f"{real}:443": {"status": True, "failure": None}},
                "http_request": {"status_code": 200, "body_length": len(BODY),
                                 "title": "Example news site", "failure": None,
                                 "headers": {"Content-Type": "text/html"}},
            },
            "control_failure": None,
            "dns_experiment_failure": None,
            "http_experiment_failure": failure,
            "blocking": blocking,
            "accessible": accessible,
        },
    }  # fmt: skip


def generate(count: int) -> Path:
    """The input file for ``count`` measurements (made once, then reused)."""
    data = HERE / "data"
    data.mkdir(exist_ok=True)
    path = data / f"ooni-{count}.jsonl.gz"
    if path.exists():
        return path
    rng = random.Random(12)
    encoder = msgspec.json.Encoder()
    partial = path.with_suffix(".partial")
    with gzip.open(partial, "wb", compresslevel=3) as fh:
        for start in range(0, count, 10_000):
            lines = b"".join(
                encoder.encode(_measurement(i, rng)) + b"\n"
                for i in range(start, min(count, start + 10_000))
            )
            fh.write(lines)
    partial.rename(path)
    return path


def main_bench() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.import", description=__doc__)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--format", choices=("csv", "jsonl", "parquet"), default="parquet")
    args = parser.parse_args()
    t0 = time.perf_counter()
    source = generate(args.count)
    made = time.perf_counter() - t0
    out = HERE / "out" / f"ooni.{args.format}"
    out.parent.mkdir(exist_ok=True)
    summary_file = HERE / "out" / "summary.json"
    real_stdout = sys.stdout
    start = time.perf_counter()
    cpu_start = time.process_time()
    with summary_file.open("w") as sink:
        sys.stdout = sink
        try:
            code = main(["import", "ooni", str(source), "--out", str(out), "--json"])
        finally:
            sys.stdout = real_stdout
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    summary = json.loads(summary_file.read_text())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "count": args.count,
                "input_bytes": source.stat().st_size,
                "generate_s": round(made, 1),
                "import_s": round(elapsed, 1),
                "measurements_per_s": round(summary["read"] / elapsed),
                "cpu_s": round(cpu, 1),
                "measurements_per_cpu_s": round(summary["read"] / cpu),
                "kept": summary["kept"],
                "skipped": summary["skipped"],
                "verdicts": summary["verdicts"],
                "output_bytes": out.stat().st_size,
                "peak_rss_mb": round(peak_mb),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores,"
                f" Python {platform.python_version()}",
                "load_average": [round(x, 1) for x in os.getloadavg()],
            },
            indent=1,
        )
    )
    return code


if __name__ == "__main__":
    raise SystemExit(main_bench())
