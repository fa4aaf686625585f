"""The analysis, pure: per-bucket counts in, a typed report of leaks, divergences and ISPs out.

Nothing here does I/O or awaits; the store and the exports feed it ``BucketCount`` lists.
"""

from collections.abc import Iterable
from dataclasses import replace

from collector.analysis.detect import analyse
from collector.analysis.model import AnalysisParams, BucketCount, IspRow, LeakEvent, Report, iso_utc
from collector.filters import Filters

__all__ = [
    "AnalysisParams",
    "BucketCount",
    "IspRow",
    "LeakEvent",
    "Report",
    "analyse",
    "analyse_filtered",
    "evidence_filters",
    "iso_utc",
]


def evidence_filters(filters: Filters) -> Filters:
    """What to count for ``filters``: ``asn`` and ``domain`` narrow the answer, not the
    evidence, so every ISP and domain of the chosen countries and times is counted."""
    return replace(filters, asn=None, domain=None)


def analyse_filtered(
    buckets: Iterable[BucketCount], filters: Filters, params: AnalysisParams | None = None
) -> Report:
    """``analyse`` of the evidence counted under ``evidence_filters(filters)``, answering
    for the ``asn`` and ``domain`` of ``filters`` only."""
    return analyse(buckets, filters.bucket_s, params, asn=filters.asn, domain=filters.domain)
