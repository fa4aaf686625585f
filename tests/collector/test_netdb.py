"""IP-to-ASN lookups from an iptoasn-style table."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from collector.netdb import UNKNOWN, NetdbError, load_netdb

TABLE = (
    "1.0.0.0\t1.0.0.255\t13335\tUS\tCLOUDFLARENET\n"
    "1.0.1.0\t1.0.3.255\t0\tNone\tNot routed\n"
    "5.52.0.0\t5.52.255.255\t58224\tIR\tTCI\n"
    "2001:db8::\t2001:db8:ffff:ffff:ffff:ffff:ffff:ffff\t31549\tIR\tShatel\n"
)


@pytest.fixture(params=["plain", "gzip"])
def table(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    if request.param == "gzip":
        path = tmp_path / "ip2asn.tsv.gz"
        path.write_bytes(gzip.compress(TABLE.encode()))
    else:
        path = tmp_path / "ip2asn.tsv"
        path.write_text(TABLE)
    return path


def test_lookup_ipv4_ipv6_and_mapped(table: Path) -> None:
    """Addresses inside ranges get their AS, country and name, for both families."""
    db = load_netdb(table)
    assert db.lookup("5.52.17.4") == {"asn": 58224, "cc": "IR", "network_name": "TCI"}
    assert db.lookup("1.0.0.255")["asn"] == 13335
    assert db.lookup("2001:db8::1")["network_name"] == "Shatel"
    assert db.lookup("::ffff:5.52.0.1")["asn"] == 58224


def test_unknown_addresses_are_as0_zz(table: Path) -> None:
    """Gaps, 'Not routed' rows and garbage answer AS0/ZZ."""
    db = load_netdb(table)
    for address in ("1.0.2.1", "9.9.9.9", "0.0.0.0", "2001:db9::1", "not an ip", None, ""):
        assert db.lookup(address) == UNKNOWN


def test_bad_table_names_file_and_line(tmp_path: Path) -> None:
    """A malformed row stops loading with the file and line in the message."""
    path = tmp_path / "bad.tsv"
    path.write_text("1.0.0.0\t1.0.0.255\t13335\tUS\tX\n1.0.1.0\t1.0.1.255\tASX\tUS\tY\n")
    with pytest.raises(NetdbError, match=r"bad\.tsv: line 2"):
        load_netdb(path)
    with pytest.raises(NetdbError, match="cannot read"):
        load_netdb(tmp_path / "missing.tsv")
