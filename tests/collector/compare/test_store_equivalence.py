"""The store (SQLite and a real PostgreSQL) and `compare` on its exports give the same
lapses, divergences and context fields, with and without --asn / --domain."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from collector.analysis import analyse_filtered, evidence_filters
from collector.compare.count import bucket_counts
from collector.compare.read import export_files, read_exports
from collector.exports import write_export
from collector.filters import Filters, build_filters
from collector.store.base import PSEUDONYM_SECRET
from collector.store.postgres import _INSERT_SQL, PostgresStore
from collector.store.sqlite import SqliteStore
from tests.collector.analysis.scenarios import NOISY_ISPS, STORY_DOMAINS, make_rows, noisy_story
from tests.collector.compare.helpers import store_with, stored_values

SELECTIONS = [
    build_filters(),
    build_filters(asn="44244"),
    build_filters(asn="AS64605", domain="bbc.com"),
    build_filters(domain="wikipedia.org", cc="IR"),
    build_filters(since="2013-09-16T02:00:00Z", until="2013-09-16T11:00:00Z", bucket="30m"),
]


def rows() -> list[dict[str, object]]:
    return make_rows(NOISY_ISPS, STORY_DOMAINS, 12, noisy_story)


async def answer(store: SqliteStore | PostgresStore, filters: Filters) -> str:
    key = await store.secret(PSEUDONYM_SECRET)
    buckets = await store.aggregate(evidence_filters(filters), key)
    return analyse_filtered(buckets, filters).dumps(with_isps=True)


async def exported(store: SqliteStore | PostgresStore, fmt: str, out: Path) -> Path:
    key = await store.secret(PSEUDONYM_SECRET)
    chunks = [chunk async for chunk in store.export_rows(Filters(), key, 50)]
    write_export(chunks, fmt, out)
    return out


def compared(export: Path, filters: Filters) -> str:
    table = read_exports([export_files([export])])
    buckets = bucket_counts(table, evidence_filters(filters))
    return analyse_filtered(buckets, filters).dumps(with_isps=True)


async def events_only(store: SqliteStore | PostgresStore, filters: Filters) -> tuple[str, str]:
    """(the events from every bucket, the events from what ``comparable_only`` counts)."""
    key = await store.secret(PSEUDONYM_SECRET)
    out = []
    for reduced in (False, True):
        evidence = evidence_filters(filters)
        buckets = await store.aggregate(evidence, key, comparable_only=reduced)
        out.append(analyse_filtered(buckets, filters).dumps(with_isps=False))
    return out[0], out[1]


def reduced_data() -> list[dict[str, object]]:
    """The story, plus a domain every ISP blocks and one every ISP reaches: series no
    finding can come from, which the reduced counting sums."""
    from tests.collector.analysis.scenarios import blocked_everywhere_story

    return rows() + make_rows(
        NOISY_ISPS, ("blocked.example", "open.example"), 12, blocked_everywhere_story
    )


def test_whole_answer_has_every_kind_of_finding() -> None:
    """The data set holds a lapse, a lapse then lifted nationally, and each divergence."""
    from collector.analysis import analyse
    from tests.collector.analysis.scenarios import HOUR, reference_buckets

    doc = analyse(reference_buckets(rows(), HOUR), HOUR).to_json(with_isps=False)
    assert [(e["asn"], e["then_lifted_nationally_at"]) for e in doc["leaks"]] == [
        (31549, None),
        (44244, "2013-09-16T10:00:00Z"),
    ]
    assert sorted((d["asn"], d["kind"]) for d in doc["divergences"]) == [
        (16322, "lagging"),
        (64605, "partial"),
        (64605, "unfiltered"),
        (197207, "lagging"),
    ]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
async def test_sqlite_store_and_compare_agree(tmp_path: Path, fmt: str) -> None:
    """Every selection gives byte-identical JSON from the SQLite store and from compare on
    its export."""
    store_with(tmp_path / "s.sqlite3", rows()).close()
    store = SqliteStore(tmp_path / "s.sqlite3")
    await store.open()
    try:
        export = await exported(store, fmt, tmp_path / f"e.{fmt}")
        for filters in SELECTIONS:
            assert compared(export, filters) == await answer(store, filters), filters
    finally:
        await store.close()


async def test_postgres_store_sqlite_store_and_compare_agree(
    pg_store: PostgresStore, tmp_path: Path
) -> None:
    """The same measurements in a real PostgreSQL and in SQLite (each with its own
    pseudonym key) give the same JSON for every selection, and so does compare on the
    PostgreSQL store's export."""
    data = rows()
    columns = [list(col) for col in zip(*stored_values(data), strict=True)]
    # The measurements table is partitioned by month (migration 0006): the months first.
    for at in {float(r["measured_at"]) for r in data}:  # type: ignore[arg-type]
        await pg_store.pool.execute("SELECT filterwatch_month_partition($1)", at)
    await pg_store.pool.fetch(_INSERT_SQL, *columns)
    store_with(tmp_path / "s.sqlite3", data).close()
    lite = SqliteStore(tmp_path / "s.sqlite3")
    await lite.open()
    try:
        export = await exported(pg_store, "parquet", tmp_path / "pg.parquet")
        for filters in SELECTIONS:
            from_pg = await answer(pg_store, filters)
            assert from_pg == await answer(lite, filters), filters
            assert compared(export, filters) == from_pg, filters
        whole = json.loads(await answer(pg_store, SELECTIONS[0]))
        assert len(whole["leaks"]) == 2 and len(whole["divergences"]) == 4
    finally:
        await lite.close()


async def test_counting_only_what_the_events_need_changes_nothing(tmp_path: Path) -> None:
    """`collector leaks` counts the series no finding can come from as their last bucket,
    and compare sums them into one: for every selection the events (and compare's per-ISP
    table) are byte-identical to those from every bucket, and the reduction did happen."""
    from collector.compare.count import count_exports

    store_with(tmp_path / "s.sqlite3", reduced_data()).close()
    store = SqliteStore(tmp_path / "s.sqlite3")
    await store.open()
    try:
        key = await store.secret(PSEUDONYM_SECRET)
        everything = await store.aggregate(Filters(), key)
        fewer = await store.aggregate(Filters(), key, comparable_only=True)
        assert len(fewer) < len(everything)
        export = await exported(store, "parquet", tmp_path / "e.parquet")
        for filters in SELECTIONS:
            full, reduced = await events_only(store, filters)
            assert reduced == full, filters
            evidence = evidence_filters(filters)
            for summarise in (False, True):
                buckets, _ = await asyncio.to_thread(  # reads the export: off the loop
                    count_exports, [export_files([export])], evidence, summarise=summarise
                )
                text = analyse_filtered(buckets, filters).dumps(with_isps=True)
                assert text == await answer(store, filters), (filters, summarise)
    finally:
        await store.close()


async def test_postgres_counts_only_what_the_events_need_with_the_same_events(
    pg_store: PostgresStore,
) -> None:
    """On PostgreSQL too, the reduced counting gives byte-identical events."""
    data = reduced_data()
    columns = [list(col) for col in zip(*stored_values(data), strict=True)]
    for at in {float(r["measured_at"]) for r in data}:  # type: ignore[arg-type]
        await pg_store.pool.execute("SELECT filterwatch_month_partition($1)", at)
    await pg_store.pool.fetch(_INSERT_SQL, *columns)
    key = await pg_store.secret(PSEUDONYM_SECRET)
    fewer = await pg_store.aggregate(Filters(), key, comparable_only=True)
    assert len(fewer) < len(await pg_store.aggregate(Filters(), key))
    for filters in SELECTIONS:
        full, reduced = await events_only(pg_store, filters)
        assert reduced == full, filters
