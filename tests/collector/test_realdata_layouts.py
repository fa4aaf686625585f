"""Citizen Lab's test lists as the repository lays them out, and iptoasn in every layout it
publishes, read from the real samples (and layouts built from them in tmp_path)."""

from __future__ import annotations

import csv
import gzip
import ipaddress
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from collector.netdb import load_netdb
from collector.targets import REGIONAL_LISTS, load_targets, log_targets
from shared.errors import ConfigError
from tests.realdata import realdata


def _urls(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [row["url"] for row in csv.DictReader(fh)]


@pytest.fixture
def test_lists_root(tmp_path: Path) -> Path:
    """A checkout's root: the real lists/ under it (a link: nothing is copied)."""
    root = tmp_path / "test-lists"
    root.mkdir()
    (root / "lists").symlink_to(realdata("citizenlab-test-lists"), target_is_directory=True)
    (root / "README.md").write_text("Usage\n")
    return root


def test_a_kz_agent_gets_every_row_of_global_kz_and_cis(test_lists_root: Path) -> None:
    """Pointed at the repository root or at lists/, a KZ agent gets every URL of global.csv,
    kz.csv and the regional cis.csv (the README's CIS list), each once."""
    lists = realdata("citizenlab-test-lists")
    wanted = [*_urls(lists / "global.csv"), *_urls(lists / "kz.csv"), *_urls(lists / "cis.csv")]
    for path in (test_lists_root, lists):
        got = [t.url for t in load_targets(path).for_country("KZ")]
        assert got == list(dict.fromkeys(u.strip() for u in wanted))
        assert set(got) == {u.strip() for u in wanted}
    assert "KZ" in REGIONAL_LISTS["cis"]


def test_the_regional_list_is_only_for_its_region() -> None:
    """An Iranian agent gets global and ir, not cis; a Russian one gets cis too."""
    lists = realdata("citizenlab-test-lists")
    targets = load_targets(lists)
    cis = set(_urls(lists / "cis.csv")) - set(_urls(lists / "global.csv"))
    iran = {t.url for t in targets.for_country("IR")}
    assert not cis & (iran - set(_urls(lists / "ir.csv")))
    assert cis <= {t.url for t in targets.for_country("RU")}


def test_the_category_legend_names_the_codes() -> None:
    """Both legend files load: old codes and new ones have their names."""
    targets = load_targets(realdata("citizenlab-test-lists"))
    assert targets.categories["FEXP"] == "Freedom of expression and media freedom"
    assert targets.categories["ALDR"] == "Alcohol & Drugs"


def test_start_up_says_what_it_loaded_and_warns_of_nothing(tmp_path: Path) -> None:
    """The start-up log gives the targets per list; an empty list is a warning; a directory
    holding no list at all is an error naming it."""
    targets = load_targets(realdata("citizenlab-test-lists"))
    with capture_logs() as logs:
        log_targets(targets, Path("lists"))
        log_targets(load_targets(None), None)
    loaded = next(e for e in logs if e["event"] == "targets_loaded")
    assert loaded["per_list"]["cis"] == 339 and loaded["per_list"]["global"] == 1722
    assert any(e["event"] == "no_targets" and e["log_level"] == "warning" for e in logs)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no target list here"):
        load_targets(empty)


def test_iptoasn_integer_layout_reads_as_the_dotted_one() -> None:
    """ip2asn-v4-u32 (integers) gives the same networks as ip2asn-v4 (dotted) for every
    range of the real samples."""
    folder = realdata("iptoasn")
    dotted = load_netdb(folder / "ip2asn-v4.sample.tsv")
    integers = load_netdb(folder / "ip2asn-v4-u32.sample.tsv")
    assert len(dotted) == len(integers) > 0
    for line in (folder / "ip2asn-v4-u32.sample.tsv").read_text().splitlines():
        start = str(ipaddress.IPv4Address(int(line.split("\t")[0])))
        assert integers.lookup(start) == dotted.lookup(start)
    assert integers.lookup("1.0.0.1")["asn"] == 13335


def test_iptoasn_combined_and_gzipped(tmp_path: Path) -> None:
    """v4 and v6 in one file (the combined layout), gzipped, read as both files apart."""
    folder = realdata("iptoasn")
    v4 = (folder / "ip2asn-v4.tsv").read_text()
    v6 = (folder / "ip2asn-v6.sample.tsv").read_text()
    combined = tmp_path / "ip2asn-combined.tsv.gz"
    combined.write_bytes(gzip.compress((v4 + v6).encode()))
    table = load_netdb(combined)
    assert len(table) == len(load_netdb(folder / "ip2asn-v4.tsv")) + len(
        load_netdb(folder / "ip2asn-v6.sample.tsv")
    )
    assert table.lookup("8.8.8.8")["asn"] == 15169
