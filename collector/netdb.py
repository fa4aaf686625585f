"""IP address -> (ASN, country, network name) from an iptoasn.com-style table.

The table is tab-separated, one range a line: ``range_start range_end AS_number
country_code AS_description``, in every layout iptoasn.com publishes: ``ip2asn-v4.tsv``,
``ip2asn-v6.tsv``, ``ip2asn-combined.tsv`` (both families), ``ip2asn-v4-u32.tsv`` (IPv4
addresses as unsigned 32-bit integers), each plain or gzipped (``.gz``, told by its first
bytes, not its name). Rows with AS 0 (``Not routed``, country ``None``) mean unknown.
It is loaded once into sorted arrays and looked up with ``bisect`` in O(log n). Addresses
are looked up and forgotten: nothing here stores or logs them.
"""

from __future__ import annotations

import gzip
import ipaddress
import re
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from shared.errors import FilterwatchError
from shared.schema import NetworkFacts

UNKNOWN: Final[NetworkFacts] = {"asn": 0, "cc": "ZZ", "network_name": ""}
_CC_RE: Final = re.compile(r"^[A-Z]{2}$")


class NetdbError(FilterwatchError):
    """The IP-to-ASN table could not be read."""


@dataclass(slots=True)
class _Family:
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    nets: list[NetworkFacts] = field(default_factory=list)

    def sort(self) -> None:
        order = sorted(range(len(self.starts)), key=self.starts.__getitem__)
        self.starts = [self.starts[i] for i in order]
        self.ends = [self.ends[i] for i in order]
        self.nets = [self.nets[i] for i in order]

    def find(self, value: int) -> NetworkFacts:
        i = bisect_right(self.starts, value) - 1
        if i >= 0 and value <= self.ends[i]:
            return self.nets[i]
        return UNKNOWN


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    text = text.strip()
    if text.isdigit():  # the u32 layout: an IPv4 address as an unsigned integer
        value = int(text)
        if value >= 1 << 32:
            raise ValueError(f"{text} is not an IPv4 address as a 32-bit integer")
        return ipaddress.IPv4Address(value)
    return ipaddress.ip_address(text)


class NetDb:
    """An immutable IP-to-network table; an empty one answers AS0/ZZ for everything."""

    def __init__(self, rows: Iterable[tuple[str, str, int, str, str]] = ()) -> None:
        self._v4 = _Family()
        self._v6 = _Family()
        interned: dict[tuple[int, str, str], NetworkFacts] = {}
        for start_text, end_text, asn, cc, name in rows:
            start = _address(start_text)
            end = _address(end_text)
            if start.version != end.version or int(end) < int(start):
                raise ValueError(f"bad range {start_text} - {end_text}")
            if asn == 0:
                continue  # "Not routed": unknown, the same as no row
            cc = cc.upper() if _CC_RE.match(cc.upper()) else "ZZ"
            key = (asn, cc, name)
            net = interned.get(key)
            if net is None:
                net = interned[key] = {"asn": asn, "cc": cc, "network_name": name}
            fam = self._v4 if start.version == 4 else self._v6
            fam.starts.append(int(start))
            fam.ends.append(int(end))
            fam.nets.append(net)
        self._v4.sort()
        self._v6.sort()

    def __len__(self) -> int:
        return len(self._v4.starts) + len(self._v6.starts)

    def lookup(self, address: str | None) -> NetworkFacts:
        """The network of ``address``; ``UNKNOWN`` (AS0/ZZ) when not in the table."""
        if not address:
            return UNKNOWN
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return UNKNOWN
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        fam = self._v4 if ip.version == 4 else self._v6
        return fam.find(int(ip))


def _parse_lines(lines: Iterable[str], source: str) -> Iterable[tuple[str, str, int, str, str]]:
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) < 4:
            raise NetdbError(f"{source}: line {lineno}: expected 5 tab-separated columns")
        try:
            asn = int(parts[2].upper().removeprefix("AS"))
        except ValueError:
            raise NetdbError(
                f"{source}: line {lineno}: {parts[2][:20]!r} is not an AS number"
            ) from None
        yield parts[0], parts[1], asn, parts[3], parts[4] if len(parts) > 4 else ""


def load_netdb(path: Path) -> NetDb:
    """Read a plain or gzipped table (blocking: call it from a thread)."""
    try:
        with path.open("rb") as probe:
            gzipped = probe.read(2) == b"\x1f\x8b"
        opener = gzip.open if gzipped else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
            return NetDb(_parse_lines(fh, str(path)))
    except OSError as exc:
        raise NetdbError(
            f"{path}: cannot read the IP-to-ASN table: {exc.strerror or exc}"
        ) from None
    except ValueError as exc:
        raise NetdbError(f"{path}: {exc}") from None
