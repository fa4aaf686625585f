"""The analysis, pure: per-bucket counts in, a typed report of leaks and ISPs out.

Nothing here does I/O or awaits; the store and the exports feed it ``BucketCount`` lists.
"""

from collector.analysis.detect import analyse
from collector.analysis.model import AnalysisParams, IspRow, LeakEvent, Report, iso_utc

__all__ = ["AnalysisParams", "IspRow", "LeakEvent", "Report", "analyse", "iso_utc"]
