"""Blockpage fingerprints in OONI's CSV format, and matching them.

Columns (a header row is required; extra columns such as OONI's ``other_names`` and
``confidence_no_fp`` are ignored, so OONI's own files load too):
``name,scope,location_found,pattern_type,pattern,expected_countries,source,exp_url,notes``.

- ``location_found``: ``body``, ``dns``, ``header.<name>`` (that header's value) or
  ``header`` (any ``name: value`` line).
- ``pattern_type``: ``full`` (equal), ``contains`` or ``prefix``.
- ``scope``: ``nat``, ``isp``, ``prod``, ``inst``, ``vbw``... and ``fp``: a known false
  positive. False positives are checked first: a response that matches one is not a
  blockpage, whatever else it matches.
"""

from __future__ import annotations

import csv
import functools
import io
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

from shared.errors import ConfigError

COLUMNS: Final = (
    "name",
    "scope",
    "location_found",
    "pattern_type",
    "pattern",
    "expected_countries",
    "source",
    "exp_url",
    "notes",
)
PATTERN_TYPES: Final = frozenset({"full", "contains", "prefix"})
FALSE_POSITIVE_SCOPE: Final = "fp"
MAX_FINGERPRINT_FILE: Final = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """One known blockpage (or known false positive) pattern."""

    name: str
    scope: str
    location: str
    pattern_type: str
    pattern: str
    expected_countries: tuple[str, ...] = ()
    source: str = ""
    exp_url: str = ""
    notes: str = ""

    @property
    def false_positive(self) -> bool:
        return self.scope == FALSE_POSITIVE_SCOPE

    def matches(self, value: str) -> bool:
        """Whether ``value`` (a header value or a DNS answer) matches the pattern."""
        if self.pattern_type == "full":
            return value == self.pattern
        if self.pattern_type == "prefix":
            return value.startswith(self.pattern)
        return self.pattern in value

    def matches_body(self, body: bytes) -> bool:
        """Whether the raw body matches (compared as bytes: no guessing of the charset)."""
        pattern = self.pattern.encode("utf-8")
        if self.pattern_type == "full":
            return body == pattern
        if self.pattern_type == "prefix":
            return body.startswith(pattern)
        return pattern in body


def _normal_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value.lower().rstrip(".")  # a CNAME target


@dataclass(frozen=True, slots=True)
class Fingerprints:
    """A set of fingerprints, split by where they are looked for."""

    entries: tuple[Fingerprint, ...] = ()

    def _at(self, location: str) -> Iterable[Fingerprint]:
        return (f for f in self.entries if f.location == location)

    def match_dns(self, answer: str) -> Fingerprint | None:
        """The blockpage fingerprint a DNS answer (address or CNAME) matches, if any."""
        answer = _normal_address(answer)
        found = None
        for fp in self._at("dns"):
            if fp.matches(answer):
                if fp.false_positive:
                    return None
                found = found or fp
        return found

    def match_response(
        self, headers: Iterable[tuple[str, str]], body: bytes | None
    ) -> Fingerprint | None:
        """The blockpage an HTTP response matches, if any; a false-positive match wins."""
        pairs = [(name.lower(), value) for name, value in headers]
        found = None
        for fp in self.entries:
            if fp.location == "dns" or not self._response_matches(fp, pairs, body):
                continue
            if fp.false_positive:
                return None
            found = found or fp
        return found

    @staticmethod
    def _response_matches(
        fp: Fingerprint, headers: list[tuple[str, str]], body: bytes | None
    ) -> bool:
        if fp.location == "body":
            return body is not None and fp.matches_body(body)
        if fp.location == "header":
            return any(fp.matches(f"{name}: {value}") for name, value in headers)
        if fp.location.startswith("header."):
            wanted = fp.location[len("header.") :]
            return any(name == wanted and fp.matches(value) for name, value in headers)
        return False

    def __len__(self) -> int:
        return len(self.entries)


def _location(value: str) -> str:
    value = value.strip().lower()
    if value in ("body", "dns", "header") or (value.startswith("header.") and len(value) > 7):
        return value
    raise ValueError(f"location_found {value!r}: expected body, dns, header or header.<name>")


def parse_fingerprints(text: str, source: str = "<fingerprints>") -> Fingerprints:
    """Fingerprints from CSV text; ``ConfigError`` names the line and column that is wrong."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise ConfigError(source, "line 1", f"missing columns: {', '.join(missing)}")
    entries: list[Fingerprint] = []
    for row in reader:
        line = f"line {reader.line_num}"
        name = (row.get("name") or "").strip()
        pattern = row.get("pattern") or ""
        if not name:
            raise ConfigError(source, f"{line}: name", "a fingerprint needs a name")
        if not pattern:
            raise ConfigError(source, f"{line}: pattern", "a fingerprint needs a pattern")
        pattern_type = (row.get("pattern_type") or "").strip().lower()
        if pattern_type not in PATTERN_TYPES:
            raise ConfigError(
                source,
                f"{line}: pattern_type",
                f"expected one of full, contains, prefix, got {pattern_type!r}",
            )
        try:
            location = _location(row.get("location_found") or "")
        except ValueError as exc:
            raise ConfigError(source, f"{line}: location_found", str(exc)) from None
        if location == "dns" and pattern_type == "full":
            pattern = _normal_address(pattern)
        countries = tuple(
            c.strip().upper() for c in (row.get("expected_countries") or "").split(",") if c.strip()
        )
        entries.append(
            Fingerprint(
                name=name,
                scope=(row.get("scope") or "").strip().lower(),
                location=location,
                pattern_type=pattern_type,
                pattern=pattern,
                expected_countries=countries,
                source=(row.get("source") or "").strip(),
                exp_url=(row.get("exp_url") or "").strip(),
                notes=(row.get("notes") or "").strip(),
            )
        )
    return Fingerprints(entries=tuple(entries))


def load_fingerprints(path: Path | None = None) -> Fingerprints:
    """Fingerprints from ``path``, or the set shipped with filterwatch. Reads a file: call it
    from a thread (or once at start-up), not from the event loop."""
    if path is None:
        text = resources.files("agent.data").joinpath("fingerprints.csv").read_text("utf-8")
        return parse_fingerprints(text, "agent/data/fingerprints.csv")
    try:
        with path.open("r", encoding="utf-8", newline="") as fh:
            text = fh.read(MAX_FINGERPRINT_FILE + 1)
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from None
    if len(text) > MAX_FINGERPRINT_FILE:
        raise ConfigError(str(path), "", f"larger than {MAX_FINGERPRINT_FILE} bytes")
    return parse_fingerprints(text, str(path))


@functools.cache
def default_fingerprints() -> Fingerprints:
    """The shipped fingerprints, read once."""
    return load_fingerprints()
