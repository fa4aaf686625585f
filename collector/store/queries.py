"""SQL for analysis and exports (stub until the analysis part lands)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from collector.store.base import BucketCount
from shared.filters import Filters


def aggregate_sqlite(conn: sqlite3.Connection, filters: Filters) -> list[BucketCount]:
    raise NotImplementedError("aggregation is not built yet")


def export_chunks_sqlite(
    conn: sqlite3.Connection, filters: Filters, pseudonym_key: bytes, chunk: int
) -> Iterator[list[dict[str, object]]]:
    raise NotImplementedError("export is not built yet")
