"""``filterwatch import ooni``: OONI's measurements in every layout OONI publishes, mapped to
our export rows and verdicts, skipped documents counted by reason."""

from __future__ import annotations

import gzip
import io
import json
import stat
import tarfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from collector.exports import ExportEncoder
from filterwatch.cli import main
from shared.schema import BLOCKING_VALUES, FAILURE_VALUES
from tests.collector.ooni.factory import measurement
from tests.realdata import realdata


def run_import(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["import", "ooni", *args, "--json"]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


def jsonl_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def real_files() -> list[Path]:
    folder = realdata("ooni-measurements")
    return sorted(p for p in folder.glob("*.json") if p.name != "MANIFEST.json")


def test_every_real_ooni_measurement_is_imported_or_skipped_with_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """All 53 real samples (test versions 0.0.1 to 0.5.28) are read; each is a row or a
    counted skip, and the one skipped is the test_keys-only fragment, which is no measurement."""
    files = real_files()
    out = tmp_path / "ooni.jsonl"
    summary = run_import(capsys, *map(str, files), "--out", str(out))
    rows = jsonl_rows(out)
    assert summary["read"] == len(files) == 53
    assert summary["kept"] + sum(summary["skipped"].values()) == summary["read"]
    assert summary["skipped"] == {"no_test_name": 1}  # PK_test_keys_only_...: no envelope
    assert len(rows) == summary["kept"] == 52
    assert len({r["measurement_id"] for r in rows}) == 52
    for row in rows:
        assert row["blocking"] in BLOCKING_VALUES
        assert row["failure"] is None or row["failure"] in FAILURE_VALUES
        assert (row["failure"] is None) == (row["failure_original"] is None)
        assert row["agent"] and len(row["agent"]) == 16


def test_real_verdicts_agree_with_oonis_where_ooni_decided(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Where OONI said dns, accessible, http-diff or http-failure, ours says the same (or the
    sharper tls / blockpage), measurement by measurement (MANIFEST.json has OONI's)."""
    manifest = json.loads((realdata("ooni-measurements") / "MANIFEST.json").read_text())
    out = tmp_path / "ooni.jsonl"
    run_import(capsys, *map(str, real_files()), "--out", str(out))
    ours = {(r["url"], r["measured_at"][:19].replace("T", " ")): r for r in jsonl_rows(out)}
    expected = {
        "dns": {"dns"},
        "http-diff": {"http_diff", "blockpage"},
        "http-failure": {"http_failure", "tls"},
        "tcp_ip": {"tcp_ip"},
    }
    checked = 0
    for entry in manifest:
        row = ours.get((entry.get("input"), entry.get("measurement_start_time")))
        if row is None:
            continue
        if entry["accessible"] is True:
            assert row["blocking"] == "ok", entry["file"]
        elif entry["blocking"] in expected:
            assert row["blocking"] in expected[entry["blocking"]], entry["file"]
        else:
            continue
        checked += 1
    assert checked >= 35


def test_the_iranian_dns_injections_come_out_dns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """MCI's answers of 10.10.34.36 for www.facebook.com and fa.wikipedia.org are dns, named
    by the fingerprint. The third Iranian sample (yooz.ir) has consistent DNS, a certificate
    the probe refused and a control that failed too: site_down, not a claim of DNS blocking."""
    folder = realdata("ooni-measurements")
    out = tmp_path / "ir.jsonl"
    run_import(capsys, *(str(p) for p in sorted(folder.glob("IR_*.json"))), "--out", str(out))
    by_domain = {r["domain"]: r for r in jsonl_rows(out)}
    for domain in ("www.facebook.com", "fa.wikipedia.org"):
        row = by_domain[domain]
        assert (row["blocking"], row["accessible"], row["blockpage"]) == ("dns", False, "ir_dns_3")
        assert row["dns_answers"] == ["10.10.34.36"]
        assert (row["cc"], row["asn"]) == ("IR", 197207)
    yooz = by_domain["yooz.ir"]
    assert (yooz["blocking"], yooz["failure"], yooz["failure_original"]) == (
        "site_down",
        "ssl_failed_handshake",
        "ssl_invalid_certificate",
    )


def _layouts(tmp_path: Path, docs: list[dict[str, Any]]) -> dict[str, Path]:
    """The same measurements in each of OONI's layouts."""
    lines = "".join(json.dumps(d) + "\n" for d in docs).encode()
    single = tmp_path / "api"
    single.mkdir()
    for i, doc in enumerate(docs):  # measurement_meta as the API gives it, and the raw one
        wrapped = {"measurement_uid": f"uid{i}", "raw_measurement": json.dumps(doc)}
        (single / f"m{i}.json").write_text(json.dumps(wrapped if i % 2 else doc))
    bucket = tmp_path / "bucket" / "raw" / "20220815" / "19" / "IR" / "webconnectivity"
    bucket.mkdir(parents=True)
    (bucket / "2022081519_IR_webconnectivity.n1.0.jsonl.gz").write_bytes(gzip.compress(lines))
    (tmp_path / "all.jsonl").write_bytes(lines)
    (tmp_path / "list.json.gz").write_bytes(gzip.compress(json.dumps(docs).encode()))
    postcan = tmp_path / "postcan.tar.gz"
    with tarfile.open(postcan, "w:gz") as tar:
        for i, doc in enumerate(docs):
            data = json.dumps({"format": "json", "content": doc}).encode()
            info = tarfile.TarInfo(f"20220815/m{i}.post")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return {
        "api documents": single,
        "bucket": tmp_path / "bucket",
        "jsonl": tmp_path / "all.jsonl",
        "gzipped list": tmp_path / "list.json.gz",
        "postcan": postcan,
    }


def test_every_layout_gives_the_same_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """API documents (raw and wrapped), the bucket's JSONL.gz, JSON lines, a gzipped list and
    a postcan give the same measurement ids and verdicts."""
    docs = [
        measurement(),
        measurement(url="https://twitter.com/", answers=("10.10.34.36",), blocking="dns"),
        measurement(url="http://www.bbc.com/persian", start="2022-08-15 19:02:00"),
    ]
    results = {}
    for name, path in _layouts(tmp_path, docs).items():
        out = tmp_path / f"{name.replace(' ', '_')}.jsonl"
        summary = run_import(capsys, str(path), "--out", str(out))
        assert summary["kept"] == 3, name
        results[name] = sorted((r["measurement_id"], r["blocking"]) for r in jsonl_rows(out))
    assert len({tuple(v) for v in results.values()}) == 1
    assert sorted(b for _, b in results["jsonl"]) == ["dns", "ok", "ok"]


def test_skipped_documents_are_counted_by_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Other tests, broken lines and measurements without input are skipped and counted;
    the good ones around them are kept; a repeated measurement is kept once."""
    good = measurement()
    other = {**measurement(), "test_name": "dnscheck"}
    no_input = {**measurement(), "input": None}
    source = tmp_path / "mixed.jsonl"
    source.write_text(
        "\n".join(
            [
                json.dumps(good),
                "{not json",
                json.dumps(other),
                json.dumps(no_input),
                json.dumps(good),
            ]
        )
        + "\n"
    )
    summary = run_import(capsys, str(source), "--out", str(tmp_path / "o.csv"))
    assert summary["read"] == 5 and summary["kept"] == 1
    assert summary["skipped"] == {
        "bad_json": 1,
        "test_name dnscheck": 1,
        "no_input": 1,
        "duplicate": 1,
    }


def test_fingerprints_apply_to_bodies_in_their_countries_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Iranian blockpage's frame is a blockpage in IR; the same page measured in IT is
    judged by OONI's own comparison and counted as a fingerprint of other countries."""
    page = '<html><iframe src="http://10.10.34.34?type=Invalid Site"></iframe></html>'
    docs = [
        measurement(url="http://www.bbc.com/persian", body=page, blocking="http-diff",
                    accessible=False),
        measurement(url="http://www.bbc.com/persian", body=page, blocking="http-diff",
                    accessible=False, cc="IT", asn="AS30722", report_id="r-it"),
    ]  # fmt: skip
    source = tmp_path / "m.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in docs))
    out = tmp_path / "o.jsonl"
    summary = run_import(capsys, str(source), "--out", str(out))
    rows = {r["cc"]: r for r in jsonl_rows(out)}
    assert (rows["IR"]["blocking"], rows["IR"]["blockpage"]) == ("blockpage", "ir_body_1")
    assert (rows["IT"]["blocking"], rows["IT"]["blockpage"]) == ("http_diff", None)
    assert summary["fingerprints_elsewhere"] == 1


def test_a_failed_handshake_where_the_control_fetched_is_tls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """OONI's http-failure whose TLS handshakes with the real name all failed is tls, the
    failure mapped onto ours and OONI's string kept."""
    doc = measurement(
        blocking="http-failure",
        accessible=False,
        status=None,
        body=None,
        http_failure="connection_reset",
        tls_failure="connection_reset",
    )
    source = tmp_path / "m.json"
    source.write_text(json.dumps(doc))
    out = tmp_path / "o.jsonl"
    run_import(capsys, str(source), "--out", str(out))
    (row,) = jsonl_rows(out)
    assert (row["blocking"], row["failure"], row["control_ok"]) == ("tls", "connection_reset", True)


def test_pseudonyms_are_keyed_hashes_of_the_report_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Measurements of one report share an agent pseudonym; another key file gives other
    pseudonyms; the key file is created private."""
    docs = [measurement(), measurement(url="https://twitter.com/"), measurement(report_id="r2")]
    source = tmp_path / "m.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in docs))
    out = tmp_path / "o.jsonl"
    run_import(capsys, str(source), "--out", str(out))
    agents = [r["agent"] for r in jsonl_rows(out)]
    assert agents[0] == agents[1] != agents[2]
    key = tmp_path / "keys" / "ooni.key"
    run_import(capsys, str(source), "--out", str(out), "--pseudonym-key", str(key))
    keyed = [r["agent"] for r in jsonl_rows(out)]
    assert keyed[0] == keyed[1] and not set(keyed) & set(agents)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "20220815T190043Z" not in out.read_text()  # report ids never appear


def test_partitions_by_day_in_any_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--partition-by-day writes day=YYYY-MM-DD directories whatever the input's order."""
    docs = [
        measurement(start="2022-08-16 01:00:00"),
        measurement(start="2022-08-15 19:00:00", url="https://twitter.com/"),
        measurement(start="2022-08-16 02:00:00", url="https://x.com/"),
    ]
    source = tmp_path / "m.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in docs))
    out = tmp_path / "days"
    run_import(capsys, str(source), "--partition-by-day", str(out))
    days = {p.parent.name: pq.read_table(p).num_rows for p in out.rglob("*.parquet")}
    assert days == {"day=2022-08-15": 1, "day=2022-08-16": 2}


def test_bad_usage_names_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing input or an output of unknown format exits 2 naming it."""
    assert main(["import", "ooni", str(tmp_path / "nope"), "--out", str(tmp_path / "o.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    source = tmp_path / "m.json"
    source.write_text(json.dumps(measurement()))
    assert main(["import", "ooni", str(source), "--out", str(tmp_path / "o.xlsx")]) == 2
    assert "--out" in capsys.readouterr().err


def test_compare_reads_ooni_data_and_merges_it_with_collector_exports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """compare runs on an OONI import alone, and merged with a collector's export both
    sources' ISPs are in one table."""
    docs = [
        measurement(report_id=f"r{i}", start=f"2022-08-15 19:{i:02d}:00", answers=("10.10.34.36",),
                    blocking="dns", accessible=False)
        for i in range(6)
    ]  # fmt: skip
    source = tmp_path / "m.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in docs))
    ooni = tmp_path / "ooni.parquet"
    run_import(capsys, str(source), "--out", str(ooni))
    ours = tmp_path / "collector.jsonl"
    rows = [
        {"measurement_id": f"c{i}", "measured_at": f"2022-08-15T19:{i:02d}:30.000000Z",
         "cc": "IR", "asn": 58224, "network_name": "TCI", "agent": f"a{i % 2}",
         "url": "https://www.facebook.com/", "domain": "www.facebook.com", "blocking": "ok",
         "accessible": True, "dns_answers": ["157.240.1.35"]}
        for i in range(6)
    ]  # fmt: skip
    encoder = ExportEncoder("jsonl")
    ours.write_bytes(encoder.encode(rows) + encoder.finish())
    assert main(["compare", str(ooni), "--format", "json", "--bucket", "1h"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert {i["asn"] for i in alone["isps"]} == {197207}
    assert main(["compare", str(ooni), str(ours), "--format", "json", "--bucket", "1h"]) == 0
    merged = json.loads(capsys.readouterr().out)
    assert {i["asn"] for i in merged["isps"]} == {197207, 58224}
