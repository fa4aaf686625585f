"""The monitor's copy of the window's buckets, per (cc, domain): patched with the buckets of
the series that received data, so that a pass reads only what changed from the store.

It also keeps, per (cc, domain), the buckets that show a difference (an ISP with both
accessible and blocked results, or ISPs that do not agree), updated for the buckets a patch
touches: a domain with none anywhere in the window can hold no finding of any kind (every
finding, leak or divergence, is a difference), so the analysis leaves it out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from collector.analysis.model import BLOCKED_METHODS, BucketCount

_Range = tuple[str, int, str, float, float]  # (cc, asn, domain, since, until)
_Key = tuple[str, str]  # (cc, domain)


def _state(b: BucketCount) -> str | None:
    ok = b.counts.get("ok", 0)
    blocked = sum(n for v, n in b.counts.items() if v in BLOCKED_METHODS)
    if ok and blocked:
        return "mixed"
    if ok:
        return "ok"
    return "blocked" if blocked else None


class SeriesCache:
    """Buckets keyed by (cc, domain) then (asn, bucket_start)."""

    def __init__(self) -> None:
        self._series: dict[_Key, dict[tuple[int, float], BucketCount]] = {}
        self._asns: dict[_Key, set[int]] = {}
        self._differs: dict[_Key, set[float]] = {}  # bucket starts that show a difference
        self._last: dict[str, float] = {}  # per country, its latest bucket

    def __len__(self) -> int:
        return sum(len(s) for s in self._series.values())

    def load(self, buckets: Iterable[BucketCount]) -> None:
        self._series.clear()
        self._asns.clear()
        self._differs.clear()
        self._last.clear()
        self._refresh(self._add(buckets))

    def patch(self, ranges: Sequence[_Range], buckets: Iterable[BucketCount]) -> None:
        """Replace each range's buckets (of one ISP's series) by ``buckets``, freshly counted."""
        touched: set[tuple[_Key, float]] = set()
        for cc, asn, domain, since, until in ranges:
            series = self._series.get((cc, domain))
            if not series:
                continue
            for key in [k for k in series if k[0] == asn and since <= k[1] < until]:
                del series[key]
                touched.add(((cc, domain), key[1]))
        self._refresh(touched | self._add(buckets))

    def _add(self, buckets: Iterable[BucketCount]) -> set[tuple[_Key, float]]:
        last = self._last
        touched: set[tuple[_Key, float]] = set()
        for b in buckets:
            key = (b.cc, b.domain)
            self._series.setdefault(key, {})[(b.asn, b.bucket_start)] = b
            self._asns.setdefault(key, set()).add(b.asn)
            touched.add((key, b.bucket_start))
            if b.bucket_start > last.get(b.cc, -1.0):
                last[b.cc] = b.bucket_start
        return touched

    def _refresh(self, touched: Iterable[tuple[_Key, float]]) -> None:
        for key, start in touched:
            series = self._series.get(key, {})
            states = {
                _state(b) for asn in self._asns.get(key, ()) if (b := series.get((asn, start)))
            }
            states.discard(None)
            differs = self._differs.setdefault(key, set())
            if "mixed" in states or len(states) > 1:
                differs.add(start)
            else:
                differs.discard(start)

    def evict(self, window_start: float) -> None:
        """Forget buckets that left the window."""
        for key in list(self._series):
            series = self._series[key]
            for k in [k for k in series if k[1] < window_start]:
                del series[k]
            differs = self._differs.get(key, set())
            for start in [s for s in differs if s < window_start]:
                differs.discard(start)
            if not series:
                del self._series[key]
                self._asns.pop(key, None)
                self._differs.pop(key, None)

    def disagrees(self, cc: str, domain: str) -> bool:
        """Whether any bucket of ``domain`` in ``cc`` shows a difference."""
        return bool(self._differs.get((cc, domain)))

    def country(self, cc: str, domains: Iterable[str]) -> list[BucketCount]:
        """The buckets of ``domains`` in ``cc``, every ISP, and (when none of them reaches
        it) an empty bucket at the country's latest: the analysis dates "ongoing" against
        the latest data of the country, as when it reads the whole country."""
        out: list[BucketCount] = []
        for domain in sorted(set(domains)):
            out.extend(self._series.get((cc, domain), {}).values())
        last = self._last.get(cc)
        if out and last is not None and max(b.bucket_start for b in out) < last:
            first = out[0]
            out.append(
                replace(
                    first,
                    bucket_start=last,
                    counts={},
                    agents=0,
                    accessible_agent_ids=(),
                    example_ids=(),
                )
            )
        return out

    def domains(self, cc: str) -> set[str]:
        return {d for c, d in self._series if c == cc}

    def countries(self) -> set[str]:
        return {cc for cc, _ in self._series}
