"""The rows of the ``measurements`` table (and of ``monitor_dirty``) as both stores insert
them: one measurement's columns in the insert's order, and a batch's dirty series."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from shared.schema import Blocking, Measurement, record_of

Row = tuple[Any, ...]
_BLOCKING: Final = {b: b.value for b in Blocking}  # a dict lookup, not the enum's property


def _control_ok(control: Any) -> int | None:
    if control is None:
        return None
    if control.get("failure") is not None:
        return 0
    http = control.get("http")
    if http is None or http.get("failure") is not None or http.get("status") is None:
        return 0
    return 1


def measurement_row(
    m: Measurement, agent_id: str, batch_id: str, received_at: float, record: bytes | None = None
) -> Row:
    """The ``measurements`` row of one validated measurement (the column order of the
    insert); ``record`` is its ``record_of``, when the decoder gave it (``decode_record``)."""
    net = m.network
    dns = m.dns
    http = m.http
    answers = dns.get("answers") if dns else None
    accessible = m.accessible
    return (
        m.id,
        agent_id,
        batch_id,
        m.measured_at,
        received_at,
        net["cc"] if net else None,
        net["asn"] if net else None,
        net["network_name"] if net else None,
        m.url,
        m.domain.lower(),
        _BLOCKING[m.blocking],
        None if accessible is None else int(accessible),
        m.failure,
        m.blockpage,
        " ".join(answers) if answers else None,
        http.get("status") if http else None,
        http.get("body_length") if http else None,
        _control_ok(m.control),
        m.failure_original,
        # The validated measurement as msgpack: known fields only, as the schema types them.
        record_of(m) if record is None else record,
    )


def measurement_rows(
    results: Sequence[Measurement],
    agent_id: str,
    batch_id: str,
    received_at: float,
    records: Sequence[bytes] | None = None,
) -> list[Row]:
    """The rows of a batch's measurements (``records``: their ``record_of``, if known)."""
    if records is None:
        return [measurement_row(m, agent_id, batch_id, received_at) for m in results]
    return [
        measurement_row(m, agent_id, batch_id, received_at, record)
        for m, record in zip(results, records, strict=True)
    ]


def dirty_rows(rows: Sequence[Row]) -> list[tuple[str, int, str, float, float]]:
    """``monitor_dirty`` rows of measurement rows: per located (cc, asn, domain), the range
    of measured_at (duplicates included: recounting them is harmless)."""
    ranges: dict[tuple[str, int, str], list[float]] = {}
    for row in rows:
        cc, asn = row[5], row[6]
        if cc is None or asn is None:
            continue
        key = (cc, asn, row[9])
        at = row[3]
        seen = ranges.get(key)
        if seen is None:
            ranges[key] = [at, at]
        elif at < seen[0]:
            seen[0] = at
        elif at > seen[1]:
            seen[1] = at
    return [(cc, asn, domain, lo, hi) for (cc, asn, domain), (lo, hi) in sorted(ranges.items())]
