"""The filters every query takes (design.md section 2):
--cc --asn --domain --since --until --bucket."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.config import parse_duration

DEFAULT_BUCKET_S = 3600.0
MAX_BUCKET_S = 366 * 86400.0
MAX_AGE_S = 100 * 366 * 86400.0
MAX_ASN = 2**32 - 1
_ASN = re.compile(r"[0-9]{1,10}")
_RELATIVE = re.compile(r"^\d+(?:\.\d+)?(ms|s|m|h|d|w)$")


class FilterError(ValueError):
    """A filter value is not valid; the message names the filter."""


@dataclass(frozen=True, slots=True)
class Filters:
    """Which measurements a query looks at, and the width of its time buckets."""

    cc: str | None = None
    asn: int | None = None
    domain: str | None = None
    since: float | None = None  # UTC epoch seconds, inclusive
    until: float | None = None  # UTC epoch seconds, exclusive
    bucket_s: float = DEFAULT_BUCKET_S


def parse_time(text: str, name: str, now: float | None = None) -> float:
    """An ISO 8601 instant (naive means UTC) or a relative age like ``24h`` before ``now``."""
    text = text.strip()
    if _RELATIVE.match(text):
        base = datetime.now(UTC).timestamp() if now is None else now
        age = parse_duration(text)
        if not age <= MAX_AGE_S:
            raise FilterError(f"{name}: {text!r} is more than 100 years ago")
        return base - age
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(
            f"{name}: {text!r} is neither an ISO 8601 time nor an age like 24h"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def build_filters(
    *,
    cc: str | None = None,
    asn: str | int | None = None,
    domain: str | None = None,
    since: str | None = None,
    until: str | None = None,
    bucket: str | None = None,
    now: float | None = None,
) -> Filters:
    """Validated ``Filters`` from strings as a person types them; FilterError names the flag."""
    if cc is not None and not re.fullmatch(r"[A-Za-z]{2}", cc):
        raise FilterError(f"--cc: {cc!r} is not a two-letter country code")
    asn_value: int | None = None
    if asn is not None:
        text = str(asn).upper().removeprefix("AS")
        # ASCII digits only (str.isdigit takes "²"), and a 32-bit AS number at most.
        if not _ASN.fullmatch(text) or int(text) > MAX_ASN:
            raise FilterError(f"--asn: {str(asn)[:40]!r} is not an AS number like 58224 or AS58224")
        asn_value = int(text)
    bucket_s = DEFAULT_BUCKET_S
    if bucket is not None:
        try:
            bucket_s = parse_duration(bucket)
        except ValueError as exc:
            raise FilterError(f"--bucket: {exc}") from None
        if not 1 <= bucket_s <= MAX_BUCKET_S:
            raise FilterError("--bucket: must be at least 1s and at most 366d")
    return Filters(
        cc=cc.upper() if cc else None,
        asn=asn_value,
        domain=domain.lower().strip(".") if domain else None,
        since=parse_time(since, "--since", now) if since else None,
        until=parse_time(until, "--until", now) if until else None,
        bucket_s=bucket_s,
    )


def filters_from_query(query: Mapping[str, str | None]) -> Filters:
    """``Filters`` from an HTTP query string, or any mapping of the filters' names (the
    flags without dashes) to what was typed."""
    return build_filters(
        cc=query.get("cc"),
        asn=query.get("asn"),
        domain=query.get("domain"),
        since=query.get("since"),
        until=query.get("until"),
        bucket=query.get("bucket"),
    )


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --cc --asn --domain --since --until --bucket to a command."""
    group = parser.add_argument_group("filters")
    group.add_argument("--cc", help="country code, e.g. IR")
    group.add_argument("--asn", help="AS number, e.g. 58224")
    group.add_argument("--domain", help="domain (matches exactly)")
    group.add_argument("--since", help="ISO 8601 time or age like 24h")
    group.add_argument("--until", help="ISO 8601 time or age like 1h")
    group.add_argument("--bucket", help="time bucket width, e.g. 10s, 5m, 1h (default 1h)")


def filters_from_args(args: argparse.Namespace) -> Filters:
    """``Filters`` from the command line (``add_filter_arguments``' flags, whose names the
    query string shares); FilterError names the flag."""
    filters = filters_from_query(vars(args))
    if filters.since is not None and filters.until is not None and filters.since > filters.until:
        raise FilterError(f"--since: {args.since!r} is after --until {args.until!r}")
    if not math.isfinite(filters.bucket_s):
        raise FilterError(f"--bucket: {args.bucket!r} is not a finite duration")
    return filters
