"""The monitor's copy of the window's buckets, per (cc, domain): patched with the buckets of
the series that received data, so that a pass reads only what changed from the store."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from collector.analysis.model import BLOCKED_METHODS
from collector.store.base import BucketCount

_Range = tuple[str, int, str, float, float]  # (cc, asn, domain, since, until)


class SeriesCache:
    """Buckets keyed by (cc, domain) then (asn, bucket_start)."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], dict[tuple[int, float], BucketCount]] = {}
        self._last: dict[str, float] = {}  # per country, its latest bucket

    def __len__(self) -> int:
        return sum(len(s) for s in self._series.values())

    def load(self, buckets: Iterable[BucketCount]) -> None:
        self._series.clear()
        self._last.clear()
        self._add(buckets)

    def patch(self, ranges: Sequence[_Range], buckets: Iterable[BucketCount]) -> None:
        """Replace each range's buckets (of one ISP's series) by ``buckets``, freshly counted."""
        for cc, asn, domain, since, until in ranges:
            series = self._series.get((cc, domain))
            if not series:
                continue
            for key in [k for k in series if k[0] == asn and since <= k[1] < until]:
                del series[key]
        self._add(buckets)

    def _add(self, buckets: Iterable[BucketCount]) -> None:
        last = self._last
        for b in buckets:
            self._series.setdefault((b.cc, b.domain), {})[(b.asn, b.bucket_start)] = b
            if b.bucket_start > last.get(b.cc, -1.0):
                last[b.cc] = b.bucket_start

    def evict(self, window_start: float) -> None:
        """Forget buckets that left the window."""
        for key in list(self._series):
            series = self._series[key]
            for k in [k for k in series if k[1] < window_start]:
                del series[k]
            if not series:
                del self._series[key]

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

    def disagrees(self, cc: str, domain: str) -> bool:
        """Whether any bucket of ``domain`` in ``cc`` shows a difference: an ISP with both
        accessible and blocked results, or ISPs that do not agree. A domain with none
        anywhere in the window can hold no finding of any kind (no leak, no divergence:
        they all are differences), so the analysis can leave it out."""
        seen: dict[float, str] = {}
        for b in self._series.get((cc, domain), {}).values():
            ok = b.counts.get("ok", 0)
            blocked = sum(n for v, n in b.counts.items() if v in BLOCKED_METHODS)
            if ok and blocked:
                return True
            if not ok and not blocked:
                continue
            state = "ok" if ok else "blocked"
            if seen.setdefault(b.bucket_start, state) != state:
                return True
        return False

    def domains(self, cc: str) -> set[str]:
        return {d for c, d in self._series if c == cc}

    def countries(self) -> set[str]:
        return {cc for cc, _ in self._series}
