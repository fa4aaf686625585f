"""Exports of a real SQLite store, read back by compare, give the collector's answer."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from collector.analysis import analyse
from collector.analysis.model import BucketCount
from collector.compare.count import bucket_counts
from collector.compare.read import ExportReadError, export_files, read_exports
from collector.exports import write_export
from collector.filters import Filters, build_filters
from collector.store.queries import Pseudonyms, aggregate_sqlite, export_chunks_sqlite
from tests.collector.analysis.scenarios import (
    FIVE_ISPS,
    HOUR,
    STORY_DOMAINS,
    make_rows,
    reference_buckets,
    story_verdict,
)
from tests.collector.compare.helpers import store_with

KEY = b"k" * 32
FILTERS = Filters(bucket_s=HOUR)


def _story_rows() -> list[dict[str, object]]:
    rows = make_rows(FIVE_ISPS, STORY_DOMAINS, 12, story_verdict)
    # noise that must be counted the same everywhere: a measurement with no network
    rows.append({**rows[0], "measurement_id": "no-network", "cc": None, "asn": None})
    return rows


def _sorted(buckets: Iterable[BucketCount]) -> list[BucketCount]:
    return sorted(buckets, key=lambda b: (b.cc, b.asn, b.domain, b.bucket_start))


@pytest.fixture
def story(tmp_path: Path):  # type: ignore[no-untyped-def]
    rows = _story_rows()
    conn = store_with(tmp_path / "store.sqlite3", rows)
    yield conn, rows
    conn.close()


def _export(conn, fmt: str, out: Path, filters: Filters = FILTERS, **kw) -> Path:  # type: ignore[no-untyped-def]
    write_export(export_chunks_sqlite(conn, filters, KEY, 7), fmt, out, **kw)
    return out


def test_sql_aggregation_matches_the_plain_reference(story) -> None:  # type: ignore[no-untyped-def]
    """The store's GROUP BY gives exactly the counts a plain Python count of the rows gives."""
    conn, rows = story
    located = [r for r in rows if r["cc"] is not None]
    assert aggregate_sqlite(conn, FILTERS, KEY) == reference_buckets(located, HOUR, Pseudonyms(KEY))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_each_format_gives_the_collectors_answer(story, tmp_path: Path, fmt: str) -> None:  # type: ignore[no-untyped-def]
    """compare on a CSV, JSONL or Parquet export counts and reports byte for byte what the
    store does."""
    conn, _ = story
    out = _export(conn, fmt, tmp_path / f"export.{fmt}")
    table = read_exports([export_files([out])])
    assert table.num_rows == 12 * 4 * 15 + 1
    from_export = bucket_counts(table, FILTERS)
    from_store = aggregate_sqlite(conn, FILTERS, KEY)
    assert _sorted(from_export) == from_store
    expected = analyse(from_store, HOUR).dumps(with_isps=True)
    assert analyse(from_export, HOUR).dumps(with_isps=True) == expected
    assert json.loads(expected)["leaks"][0]["domains"] == ["facebook.com", "twitter.com"]


def test_mixed_formats_and_overlapping_files_drop_duplicates(story, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A CSV, a JSONL and a Parquet export of the same store, merged, count every
    measurement once."""
    conn, _ = story
    files = [_export(conn, fmt, tmp_path / f"e.{fmt}") for fmt in ("csv", "jsonl", "parquet")]
    table = read_exports([export_files([f]) for f in files])
    assert table.num_rows == 12 * 4 * 15 + 1
    assert _sorted(bucket_counts(table, FILTERS)) == aggregate_sqlite(conn, FILTERS, KEY)


def test_filters_apply_the_same_to_store_and_exports(story, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """--cc --asn --domain --since --until --bucket select the same buckets in both paths."""
    conn, _ = story
    filters = build_filters(
        cc="ir", domain="twitter.com", since="2013-09-16T03:00:00Z", until="2013-09-16T09:00:00",
        bucket="30m",
    )  # fmt: skip
    out = _export(conn, "parquet", tmp_path / "all.parquet")
    from_export = _sorted(bucket_counts(read_exports([[out]]), filters))
    from_store = aggregate_sqlite(conn, filters, KEY)
    assert from_export == from_store
    assert {b.domain for b in from_store} == {"twitter.com"}
    assert len(from_store) == 5 * 6  # five ISPs, six hours in buckets of 30 min (one used)


def test_export_of_filtered_store_holds_only_matching_rows(story, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An export with --asn holds that ISP's rows only, with pseudonyms instead of agent ids."""
    conn, _ = story
    out = _export(conn, "jsonl", tmp_path / "one.jsonl", build_filters(asn="AS31549"))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {line["asn"] for line in lines} == {31549}
    assert len(lines) == 12 * 4 * 3
    assert all(len(line["agent"]) == 16 and "agent" not in line["agent"] for line in lines)
    assert lines[0]["measured_at"].endswith("Z") and lines[0]["accessible"] in (True, False)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_day_partitions_are_a_dataset(tmp_path: Path, fmt: str) -> None:
    """--partition-by-day writes day=YYYY-MM-DD folders that pyarrow.dataset reads as one
    table, and compare reads the folder as one export."""
    rows = make_rows(FIVE_ISPS[:2], ("facebook.com",), 30, story_verdict)  # 30 h: two days
    conn = store_with(tmp_path / "s.sqlite3", rows)
    out = _export(conn, fmt, tmp_path / "parts", partition_by_day=True)
    days = sorted(p.name for p in out.iterdir())
    assert days == ["day=2013-09-16", "day=2013-09-17"]
    assert sorted(p.name for p in out.glob("*/*")) == [f"part-0.{fmt}"] * 2
    if fmt != "jsonl":  # pyarrow.dataset reads CSV and Parquet partitions
        dataset = ds.dataset(out, format=fmt, partitioning="hive")
        assert dataset.to_table().num_rows == len(rows)
    counted = bucket_counts(read_exports([export_files([out])]), FILTERS)
    assert _sorted(counted) == aggregate_sqlite(conn, FILTERS, KEY)
    conn.close()


def test_unreadable_and_unknown_files_are_named(tmp_path: Path) -> None:
    """A file that is not an export, or a broken one, gives an error naming it."""
    stray = tmp_path / "notes.txt"
    stray.write_text("hello")
    with pytest.raises(ExportReadError, match=r"notes\.txt"):
        export_files([stray])
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(ExportReadError, match=r"broken\.parquet"):
        read_exports([export_files([broken])])
    with pytest.raises(ExportReadError, match=r"missing\.csv"):
        export_files([tmp_path / "missing.csv"])


def test_empty_store_exports_and_compares_to_nothing(tmp_path: Path) -> None:
    """An empty store gives a CSV with only the header and an empty report."""
    conn = store_with(tmp_path / "empty.sqlite3", [])
    out = _export(conn, "csv", tmp_path / "empty.csv")
    assert out.read_text().startswith("measurement_id,measured_at,cc,asn")
    assert analyse(bucket_counts(read_exports([[out]]), FILTERS), HOUR).to_json(with_isps=True) == {
        "leaks": [],
        "uncorroborated": [],
        "divergences": [],
        "isps": [],
    }
    conn.close()


def test_empty_jsonl_export_compares_to_nothing(tmp_path: Path) -> None:
    """An export of no measurements in JSONL (an empty file) reads as no rows, alone or
    merged with another export, instead of failing."""
    conn = store_with(tmp_path / "empty.sqlite3", [])
    empty = _export(conn, "jsonl", tmp_path / "empty.jsonl")
    conn.close()
    assert empty.read_bytes() == b""
    assert read_exports([export_files([empty])]).num_rows == 0
    rows = make_rows(FIVE_ISPS[:2], ("facebook.com",), 3, story_verdict)
    other = store_with(tmp_path / "s.sqlite3", rows)
    full = _export(other, "csv", tmp_path / "full.csv")
    other.close()
    assert read_exports([export_files([empty]), export_files([full])]).num_rows == len(rows)
