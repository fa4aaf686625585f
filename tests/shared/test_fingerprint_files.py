"""Fingerprint files as operators have them: OONI's and Censored Planet's load whole; false
positives first; country scopes; several files; the collector serves its set to agents."""

from __future__ import annotations

import csv
from pathlib import Path

from shared.blockpages import (
    default_fingerprints,
    fingerprints_from_json,
    load_fingerprint_set,
    load_fingerprints,
)
from tests.realdata import realdata


def test_oonis_fingerprint_files_load_whole() -> None:
    """Every row of OONI's fingerprints_http.csv (regexp rows included) and
    fingerprints_dns.csv loads."""
    folder = realdata("ooni-blocking-fingerprints")
    for name in ("fingerprints_http.csv", "fingerprints_dns.csv"):
        with (folder / name).open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        loaded = load_fingerprints(folder / name)
        assert [f.name for f in loaded.entries] == [r["name"] for r in rows], name
    http = load_fingerprints(folder / "fingerprints_http.csv")
    assert sum(1 for f in http.entries if f.pattern_type == "regexp") == 14
    assert len(http) == 1729


def test_censored_planets_signatures_load_whole() -> None:
    """Both JSON-lines files load, every line; the false-positive file's are false positives
    and country-named signatures get their country."""
    folder = realdata("censoredplanet")
    for name, fp in (
        ("blockpage_signatures.json", False),
        ("false_positive_signatures.json", True),
    ):
        lines = [ln for ln in (folder / name).read_text("utf-8").splitlines() if ln.strip()]
        loaded = load_fingerprints(folder / name)
        assert len(loaded) == len(lines), name
        assert all(f.false_positive is fp for f in loaded.entries), name
    blockpages = load_fingerprints(folder / "blockpage_signatures.json")
    iran = [f for f in blockpages.entries if f.name == "cp.b_nat_ir_national_3"]
    assert iran and iran[0].expected_countries == ("IR",)


def test_every_real_file_together_matches_with_false_positives_first() -> None:
    """With OONI's and Censored Planet's files loaded together a national blockpage is found
    in its country, and a page matching a known false positive is never a blockpage."""
    prints = load_fingerprint_set(
        [
            realdata("ooni-blocking-fingerprints"),
            realdata("censoredplanet") / "blockpage_signatures.json",
            realdata("censoredplanet") / "false_positive_signatures.json",
        ]
    )
    assert len(prints) > 3000
    page = b'<html><iframe src="http://10.10.34.34?type=Invalid Site"></iframe></html>'
    found = prints.match_response([], page, "IR")
    assert found is not None and "IR" in found.expected_countries
    nginx = page + b"<p><em>Thank you for using nginx.</em></p>"
    assert prints.scan_response([], nginx, "IR").counted is None  # cp.x_fpru_nginx
    italy = prints.scan_response([], page, "IT")
    assert italy.counted is None and italy.elsewhere is not None
    assert prints.match_dns("10.10.34.36", "IR") is not None
    assert prints.match_dns("10.10.34.36", "IT") is None


def test_the_collectors_answer_round_trips() -> None:
    """The set as GET /api/v1/fingerprints gives it reads back equal."""
    shipped = default_fingerprints()
    assert fingerprints_from_json(shipped.to_json()) == shipped


def test_configured_files_come_before_the_shipped_set(tmp_path: Path) -> None:
    """Several configured files load in order, the shipped set after them."""
    a = tmp_path / "a.csv"
    a.write_text("name,scope,location_found,pattern_type,pattern\nmine,isp,body,contains,Nope\n")
    b = tmp_path / "b.jsonl"
    b.write_text('{"fingerprint": "c_isp_kz_1", "pattern": "zakon\\\\.kz blocked"}\n')
    prints = load_fingerprint_set([a, b])
    names = [f.name for f in prints.entries]
    assert names[:2] == ["mine", "cp.c_isp_kz_1"] and len(prints) == 2 + len(default_fingerprints())
    assert prints.match_response([], b"zakon.kz blocked", "KZ") is not None
