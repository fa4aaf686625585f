"""Synthetic measurements for the analysis benchmark, with known injected leaks.

Five countries of three ISPs (3, 2 and 2 agents), 200 domains of which 150 are blocked
everywhere, one measurement per agent per domain every 5 minutes. Noise that must not
become a leak: 1 % inconclusive results, one volunteer on a VPN, one site down everywhere
for a few hours, an ISP that blocks two sites only 70 % of the time (each measurement
drawn independently), an ISP that never filters two sites the others block, and a new
block rolling out ISP by ISP. Injected leaks: every agent of one ISP sees some blocked
domains for some whole hours; one of them on the 70 % blocker, whose filter stops
completely for a while. The standing differences are named as divergences.
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from collector.analysis import iso_utc
from collector.store.migrate import migrate_sqlite

T0 = 1767571200.0  # 2026-01-05T00:00:00Z
ROUND_S = 300.0
ROUNDS_PER_HOUR = 12
COUNTRIES = ("IR", "CN", "RU", "TR", "EG")
AGENTS_PER_ISP = (3, 2, 2)
DOMAINS = tuple(f"site{i:03d}.example" for i in range(200))
BLOCKED = frozenset(DOMAINS[:150])
METHODS = ("dns", "tls", "blockpage")
VPN_AGENT = ("CN", 0, 0)  # (country, ISP index, agent index): always sees the open internet


@dataclass(frozen=True)
class Leak:
    cc: str
    isp: int
    domains: tuple[str, ...]
    start: float  # fraction of the hours of data
    end: float | None  # None: until the end of the data


LEAKS: tuple[Leak, ...] = (
    Leak("IR", 1, (DOMAINS[0], DOMAINS[1]), 0.15, 0.22),
    Leak("IR", 2, (DOMAINS[10],), 0.45, 0.50),
    Leak("CN", 0, (DOMAINS[5],), 0.10, 0.14),
    Leak("RU", 1, (DOMAINS[20], DOMAINS[21], DOMAINS[22]), 0.60, 0.70),
    Leak("TR", 2, (DOMAINS[30],), 0.85, None),
    Leak("EG", 0, (DOMAINS[40],), 0.05, 0.09),
    Leak("EG", 0, (DOMAINS[41],), 0.07, 0.12),  # overlaps the one above: one event
    Leak("CN", 2, (DOMAINS[50],), 0.75, 0.78),
)
DOWN = ("IR", DOMAINS[100], 0.30, 0.35)  # down everywhere in IR for these hours
# RU's first ISP blocks these only 70 % of the time; its filter of the second one stops
# completely for a while (the lapse of LEAKS[-1]).
PROBABILISTIC = ("RU", 0, (DOMAINS[60], DOMAINS[61]), 0.7)
UNFILTERED = ("TR", 1, (DOMAINS[70], DOMAINS[71]))  # this ISP never filters these
# A new block of an open site reaches EG's ISPs one after another (fractions of the hours).
ROLLING = ("EG", DOMAINS[180], (0.50, 0.55, 0.60))
LEAKS = (*LEAKS, Leak("RU", 0, (DOMAINS[61],), 0.30, 0.36))


def asn_of(country: int, isp: int) -> int:
    return 64500 + country * 10 + isp


def plan(measurements: int) -> tuple[int, int]:
    """(rounds, hours) that give about ``measurements`` measurements."""
    per_round = len(COUNTRIES) * sum(AGENTS_PER_ISP) * len(DOMAINS)
    rounds = max(ROUNDS_PER_HOUR * 4, measurements // per_round)
    return rounds, -(-rounds // ROUNDS_PER_HOUR)


def _hours(start: float, end: float | None, hours: int) -> range:
    first = int(start * hours)
    last = hours if end is None else max(first + 1, int(end * hours))
    return range(first, last)


def expected_divergences(measurements: int) -> list[tuple[str, int, str, str, str, str | None]]:
    """The divergences the analysis must name, as (cc, asn, domain, kind, start, end)."""
    _, hours = plan(measurements)
    out: list[tuple[str, int, str, str, str, str | None]] = []
    cc, isp, domains, _ = PROBABILISTIC
    for domain in domains:
        out.append((cc, asn_of(COUNTRIES.index(cc), isp), domain, "partial", iso_utc(T0), None))
    cc, isp, domains = UNFILTERED
    for domain in domains:
        asn = asn_of(COUNTRIES.index(cc), isp)
        out.append((cc, asn, domain, "unfiltered", iso_utc(T0), None))
    cc, domain, starts = ROLLING
    first = [int(f * hours) for f in starts]
    # With three ISPs, the others' consensus needs both others: the last ISP lags from the
    # second one's start to its own.
    out.append(
        (
            cc,
            asn_of(COUNTRIES.index(cc), 2),
            domain,
            "lagging",
            iso_utc(T0 + first[1] * 3600),
            iso_utc(T0 + first[2] * 3600),
        )
    )
    return sorted(out)


def expected_leaks(measurements: int) -> list[tuple[str, int, tuple[str, ...], str, str | None]]:
    """The events the analysis must find, as (cc, asn, domains, start, end)."""
    _, hours = plan(measurements)
    by_isp: dict[tuple[str, int], list[tuple[int, int, set[str], bool]]] = {}
    for leak in LEAKS:
        span = _hours(leak.start, leak.end, hours)
        windows = by_isp.setdefault((leak.cc, leak.isp), [])
        for w in windows:
            if span.start < w[1] and w[0] < span.stop:
                windows.remove(w)
                windows.append(
                    (
                        min(w[0], span.start),
                        max(w[1], span.stop),
                        w[2] | set(leak.domains),
                        w[3] or leak.end is None,
                    )
                )
                break
        else:
            windows.append((span.start, span.stop, set(leak.domains), leak.end is None))
    out = []
    for (cc, isp), windows in by_isp.items():
        for first, stop, domains, ongoing in windows:
            out.append(
                (
                    cc,
                    asn_of(COUNTRIES.index(cc), isp),
                    tuple(sorted(domains)),
                    iso_utc(T0 + first * 3600),
                    None if ongoing else iso_utc(T0 + stop * 3600),
                )
            )
    return sorted(out, key=lambda e: (e[3], e[0], e[1]))


def generate(path: Path, measurements: int, seed: int = 7) -> int:
    """Write the synthetic store to ``path``; return the number of measurements."""
    rounds, hours = plan(measurements)
    rnd = random.Random(seed)
    conn = sqlite3.connect(path, isolation_level=None)
    migrate_sqlite(conn)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    # Bulk load without the secondary indexes, then build them once: far faster.
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'measurements'"
        " AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")

    leaking: dict[tuple[str, int, str], range] = {}
    for leak in LEAKS:
        for domain in leak.domains:
            leaking[(leak.cc, leak.isp, domain)] = _hours(leak.start, leak.end, hours)
    down_hours = _hours(DOWN[2], DOWN[3], hours)
    partly = {(PROBABILISTIC[0], PROBABILISTIC[1], d) for d in PROBABILISTIC[2]}
    never = {(UNFILTERED[0], UNFILTERED[1], d) for d in UNFILTERED[2]}
    rolling_from = {
        (ROLLING[0], isp, ROLLING[1]): int(f * hours) for isp, f in enumerate(ROLLING[2])
    }

    agents = [
        (cc, ci, isp, a, f"agent-{cc}-{isp}-{a}", asn_of(ci, isp), f"{cc} Net {isp}")
        for ci, cc in enumerate(COUNTRIES)
        for isp, n in enumerate(AGENTS_PER_ISP)
        for a in range(n)
    ]
    sql = (
        "INSERT INTO measurements (measurement_id, agent_id, batch_id, measured_at, received_at,"
        " cc, asn, network_name, url, domain, blocking, accessible, failure, blockpage,"
        " dns_answers, http_status, http_body_length, control_ok, record)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    record = b"\x80"  # an empty msgpack map: the benchmark measures the analysis, not records
    ok_tail = (1, None, None, "192.0.2.10", 200, 5120, 1, record)
    counter = 0
    conn.execute("BEGIN")
    for r in range(rounds):
        hour = r // ROUNDS_PER_HOUR
        base = T0 + r * ROUND_S
        batch = f"round-{r}"
        rows = []
        for cc, _ci, isp, a, agent_id, asn, name in agents:
            vpn = (cc, isp, a) == VPN_AGENT
            method = METHODS[isp]
            for d, domain in enumerate(DOMAINS):
                at = base + (a * 7 + d * 1.37) % 290
                noise = rnd.random()
                if noise < 0.01:
                    tail: tuple[object, ...] = (
                        None,
                        "generic_timeout_error",
                        None,
                        None,
                        None,
                        None,
                        None,
                        record,
                    )
                    blocking = "inconclusive"
                elif cc == DOWN[0] and domain == DOWN[1] and hour in down_hours:
                    blocking = "site_down"
                    tail = (None, "connection_refused", None, None, None, None, 0, record)
                elif (
                    vpn
                    or (domain not in BLOCKED and hour < rolling_from.get((cc, isp, domain), hours))
                    or hour in leaking.get((cc, isp, domain), ())
                    or (cc, isp, domain) in never
                    or ((cc, isp, domain) in partly and rnd.random() >= PROBABILISTIC[3])
                ):
                    blocking = "ok"
                    tail = ok_tail
                else:
                    blocking = method
                    tail = (
                        0,
                        "connection_reset",
                        "ir-peyvandha" if method == "blockpage" else None,
                        "10.10.34.34",
                        None,
                        None,
                        1,
                        record,
                    )
                rows.append(
                    (
                        f"{counter:010d}",
                        agent_id,
                        batch,
                        at,
                        at + 30.0,
                        cc,
                        asn,
                        name,
                        f"https://{domain}/",
                        domain,
                        blocking,
                        *tail,
                    )
                )
                counter += 1
        conn.executemany(sql, rows)
        if r % 50 == 49:
            conn.execute("COMMIT")
            conn.execute("BEGIN")
    conn.execute("COMMIT")
    for _, index_sql in indexes:
        conn.execute(index_sql)
    conn.execute("ANALYZE")
    conn.close()
    return counter
