"""Exports that data tools type right: pandas reads Parquet's nullable integers as Int64 and
booleans as boolean, dns_answers is a list in Parquet and JSONL and space-separated in CSV,
and compare reads the layout of older exports as well as the new one."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from collector.compare.count import count_exports
from collector.compare.read import export_files
from collector.exports import EXPORT_SCHEMA, ExportEncoder
from collector.filters import Filters

ROWS: list[dict[str, object]] = [
    {"measurement_id": "m1", "measured_at": "2026-01-01T10:00:00.000000Z", "cc": "IR",
     "asn": 58224, "network_name": "TCI", "agent": "a1", "url": "https://x.example/",
     "domain": "x.example", "blocking": "ok", "accessible": True, "failure": None,
     "blockpage": None, "dns_answers": ["192.0.2.1", "2001:db8::1"], "http_status": 200,
     "http_body_length": 5120, "control_ok": True, "failure_original": None},
    {"measurement_id": "m2", "measured_at": "2026-01-01T10:05:00.000000Z", "cc": "IR",
     "asn": 58224, "network_name": "TCI", "agent": "a2", "url": "https://x.example/",
     "domain": "x.example", "blocking": "inconclusive", "accessible": None,
     "failure": "unknown_failure", "blockpage": None, "dns_answers": None, "http_status": None,
     "http_body_length": None, "control_ok": None,
     "failure_original": "http_invalid_redirect_location_host"},
]  # fmt: skip


def write(path: Path, fmt: str) -> Path:
    encoder = ExportEncoder(fmt)
    path.write_bytes(encoder.encode(ROWS) + encoder.finish())
    return path


def test_pandas_reads_nullable_integers_and_booleans_typed(tmp_path: Path) -> None:
    """pandas.read_parquet gives Int64 and boolean with <NA>, not float64 and object."""
    frame = pd.read_parquet(write(tmp_path / "e.parquet", "parquet"))
    for column in ("asn", "http_status", "http_body_length"):
        assert str(frame[column].dtype) == "Int64", column
    for column in ("accessible", "control_ok"):
        assert str(frame[column].dtype) == "boolean", column
    assert frame["http_status"].isna().tolist() == [False, True]
    assert bool(frame["accessible"].iloc[0]) and pd.isna(frame["accessible"].iloc[1])
    assert list(frame["dns_answers"].iloc[0]) == ["192.0.2.1", "2001:db8::1"]
    assert frame["failure_original"].iloc[1] == "http_invalid_redirect_location_host"


def test_parquet_and_jsonl_keep_dns_answers_a_list_and_csv_space_separates_it(
    tmp_path: Path,
) -> None:
    """The list survives Parquet and JSONL as a list; CSV writes it space-separated."""
    schema = pq.read_schema(write(tmp_path / "e.parquet", "parquet"))
    assert schema.field("dns_answers").type == pa.list_(pa.string())
    lines = write(tmp_path / "e.jsonl", "jsonl").read_text().splitlines()
    assert json.loads(lines[0])["dns_answers"] == ["192.0.2.1", "2001:db8::1"]
    assert json.loads(lines[1])["dns_answers"] is None
    rows = list(csv.DictReader(io.StringIO(write(tmp_path / "e.csv", "csv").read_text())))
    assert rows[0]["dns_answers"] == "192.0.2.1 2001:db8::1"
    assert rows[1]["failure_original"] == "http_invalid_redirect_location_host"


def _old_layout(tmp_path: Path) -> list[Path]:
    """Exports as filterwatch wrote them before: dns_answers one string, no failure_original."""
    old_rows = [{k: v for k, v in r.items() if k != "failure_original"} for r in ROWS]
    for r in old_rows:
        answers = r["dns_answers"]
        r["dns_answers"] = " ".join(answers) if isinstance(answers, list) else None
    fields = [(f.name, f.type) for f in EXPORT_SCHEMA if f.name != "failure_original"]
    schema = pa.schema([(n, pa.string() if n == "dns_answers" else t) for n, t in fields])
    table = pa.Table.from_pylist(
        [{**r, "measured_at": pd.Timestamp(str(r["measured_at"]))} for r in old_rows],
        schema=schema,
    )
    parquet = tmp_path / "old.parquet"
    pq.write_table(table, parquet)
    jsonl = tmp_path / "old.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in old_rows))
    csv_path = tmp_path / "old.csv"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(old_rows[0]))
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in old_rows)
    csv_path.write_text(buf.getvalue())
    return [parquet, jsonl, csv_path]


def test_compare_reads_old_and_new_layouts_alike(tmp_path: Path) -> None:
    """An export of the old layout and one of the new count the same buckets."""
    filters = Filters(bucket_s=3600.0)
    new = [write(tmp_path / f"new.{f}", f) for f in ("parquet", "jsonl", "csv")]
    expected, _ = count_exports([export_files([new[0]])], filters)
    assert expected and expected[0].counts == {"ok": 1, "inconclusive": 1}
    for path in [*new, *_old_layout(tmp_path)]:
        buckets, rows = count_exports([export_files([path])], filters)
        assert (buckets, rows) == (expected, 2), path.name
