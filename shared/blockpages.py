"""Blockpage fingerprints as operators have them, and matching them in linear time.

Two file formats load, whole:

- OONI's CSV (``ooni/blocking-fingerprints``: ``fingerprints_http.csv``,
  ``fingerprints_dns.csv``, and our shipped ``shared/data/fingerprints.csv``). A header row
  is required; extra columns (OONI's ``other_names``, ``confidence_no_fp``) are ignored:
  ``name,scope,location_found,pattern_type,pattern,expected_countries,source,exp_url,notes``.
- Censored Planet's JSON lines (``blockpage_signatures.json``,
  ``false_positive_signatures.json``): ``{"fingerprint": NAME, "pattern": REGEX}`` a line.
  A file whose name says ``false_positive`` holds false positives. Names get a ``cp.``
  prefix; the scope comes from the name (``a_prod`` -> prod, ``b_nat`` -> nat, ``c_isp`` ->
  isp, ``d_corp`` -> inst, ``e_unk`` -> unk, ``f_gen`` -> vbw) and so does the country of
  ``b_nat_ir_...`` and ``c_isp_ru_...`` names. The pattern is looked for in the body and in
  every ``Name: value`` header line (location ``response``).

Fields:

- ``location_found``: ``body``, ``dns``, ``header.<name>`` (that header's value), ``header``
  (any ``Name: value`` line) or ``response`` (the body or any header line).
- ``pattern_type``: ``full`` (equal), ``contains``, ``prefix`` or ``regexp`` (searched).
- ``scope``: ``nat``, ``isp``, ``prod``, ``inst``, ``vbw``... and ``fp``: a known false
  positive, checked first: a response that matches one is not a blockpage, whatever else
  it matches. ``vbw`` (OONI's "vague blocking word": "Access Denied" and the like, which
  real sites say too) is *generic*: the verdict counts it only on a page that also differs
  from the control's.
- ``expected_countries``: where the fingerprint is a blockpage. Elsewhere a match is not
  called a blockpage: ``scan_*`` report it as ``elsewhere`` and the measurement records it
  (``blockpage_elsewhere`` in its facts) while the verdict comes from the comparison with
  the control. No countries: a blockpage anywhere, except that Censored Planet's names say their
  country (``cp.b_nat_ir_national_2``, which OONI's CSV carries without one, is IR's).

Every pattern is compiled by RE2 (google-re2), whose matching time is linear in the input
whatever the pattern: a hostile or careless regexp in a fingerprint file cannot hang a
probe. All the patterns of one location are matched together (an ``re2.Set``): one pass
over a body for a thousand fingerprints. Bodies are matched as bytes (Latin-1 mode, so no
charset is guessed and invalid UTF-8 cannot fail a match); patterns are their UTF-8 bytes.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final

import re2

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
REQUIRED_COLUMNS: Final = ("name", "scope", "location_found", "pattern_type", "pattern")
PATTERN_TYPES: Final = ("full", "contains", "prefix", "regexp")
FALSE_POSITIVE_SCOPE: Final = "fp"
# OONI's "vague blocking word" scope: words such as "Access Denied" that real sites use too.
GENERIC_SCOPES: Final = frozenset({"vbw"})
MAX_FINGERPRINT_FILE: Final = 16 * 1024 * 1024
MAX_PATTERN: Final = 4096
_CC_RE: Final = re.compile(r"^[A-Z]{2}$")
# Censored Planet's name prefixes and the scopes they mean.
_CP_SCOPES: Final = {"a": "prod", "b": "nat", "c": "isp", "d": "inst", "e": "unk", "f": "vbw"}
_CP_COUNTRY_RE: Final = re.compile(r"^(?:cp\.)?[bc]_(?:nat|isp)_([a-z]{2})(?:_|$)")


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

    @property
    def generic(self) -> bool:
        """Vague words ("Access Denied"): a blockpage only on a page unlike the control's."""
        return self.scope in GENERIC_SCOPES

    def applies_in(self, cc: str | None) -> bool:
        """Whether a match counts as a blockpage in country ``cc`` (None: anywhere)."""
        return cc is None or not self.expected_countries or cc.upper() in self.expected_countries

    def regex(self) -> bytes:
        """The pattern as an RE2 expression over bytes."""
        raw = self.pattern.encode("utf-8")
        if self.pattern_type == "regexp":
            return raw
        literal: bytes = re2.escape(raw)
        if self.pattern_type == "full":
            return b"\\A" + literal + b"\\z"
        if self.pattern_type == "prefix":
            return b"\\A" + literal
        return literal

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "scope": self.scope,
            "location_found": self.location,
            "pattern_type": self.pattern_type,
            "pattern": self.pattern,
            "expected_countries": ",".join(self.expected_countries),
            "source": self.source,
            "exp_url": self.exp_url,
            "notes": self.notes,
        }


@dataclass(frozen=True, slots=True)
class Scan:
    """What a value matched: the blockpage that counts here, or one that would count only
    in other countries (``elsewhere``); never both."""

    counted: Fingerprint | None = None
    elsewhere: Fingerprint | None = None


_NOTHING: Final = Scan()


def _options() -> Any:
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    options.max_mem = 64 << 20  # a thousand literals need more than the default 8 MB
    options.log_errors = False
    return options


class _Matcher:
    """The fingerprints of one location, compiled together."""

    def __init__(self, entries: Sequence[Fingerprint]) -> None:
        self.entries = tuple(entries)
        self._set = re2.Set.SearchSet(_options())
        for fp in self.entries:
            self._set.Add(fp.regex())
        self._set.Compile()

    def hits(self, data: bytes) -> list[Fingerprint]:
        found = self._set.Match(data)
        return [self.entries[i] for i in sorted(found)] if found else []


def _check_regex(fp: Fingerprint, source: str, where: str) -> None:
    try:
        re2.compile(fp.regex(), _options())
    except re2.error as exc:
        raise ConfigError(
            source, f"{where}: pattern", f"not a pattern RE2 (linear-time) accepts: {exc}"
        ) from None


def _header_line(name: str, value: str) -> bytes:
    canonical = "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))
    return f"{canonical}: {value}".encode("utf-8", "replace")


@functools.lru_cache(maxsize=65536)
def normal_address(value: str) -> str:
    """A DNS answer in the form fingerprints compare: a canonical address or a bare name."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value.lower().rstrip(".")  # a CNAME target


class Fingerprints:
    """A set of fingerprints, compiled per location on first use."""

    def __init__(self, entries: Iterable[Fingerprint] = ()) -> None:
        self.entries: tuple[Fingerprint, ...] = tuple(entries)
        self._matchers: dict[str, _Matcher] = {}
        self._digest: str | None = None
        self._order = {fp: i for i, fp in enumerate(self.entries)}
        self._header_names = frozenset(
            f.location[len("header.") :] for f in self.entries if f.location.startswith("header.")
        )

    def __len__(self) -> int:
        return len(self.entries)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Fingerprints) and other.entries == self.entries

    def __hash__(self) -> int:
        return hash(self.entries)

    def merged(self, *others: Fingerprints) -> Fingerprints:
        """This set then the others' fingerprints (the first of equal entries kept)."""
        return Fingerprints(dict.fromkeys((*self.entries, *(e for o in others for e in o.entries))))

    def digest(self) -> str:
        """A short hash of the set's content (the collector's ETag)."""
        if self._digest is None:
            doc = json.dumps([f.to_json() for f in self.entries], sort_keys=True)
            self._digest = hashlib.sha256(doc.encode("utf-8")).hexdigest()[:32]
        return self._digest

    def compile(self) -> Fingerprints:
        """Compile every location's patterns now (blocking: from a thread or at start-up)
        rather than on the first match, which may run on an event loop."""
        for key in ("dns", "body", "lines", *(f"header.{n}" for n in self._header_names)):
            self._matcher(key)
        return self

    def counts(self) -> dict[str, int]:
        """Fingerprints per location kind: dns, http (body and headers), false positives."""
        fp = sum(1 for f in self.entries if f.false_positive)
        dns = sum(1 for f in self.entries if f.location == "dns" and not f.false_positive)
        return {"dns": dns, "http": len(self.entries) - fp - dns, "false_positive": fp}

    def _matcher(self, key: str) -> _Matcher:
        matcher = self._matchers.get(key)
        if matcher is None:
            wanted: tuple[str, ...]
            if key.startswith("header."):
                wanted = (key,)
            elif key == "lines":
                wanted = ("header", "response")
            elif key == "body":
                wanted = ("body", "response")
            else:
                wanted = (key,)
            matcher = self._matchers[key] = _Matcher(
                [f for f in self.entries if f.location in wanted]
            )
        return matcher

    @staticmethod
    def _decide(hits: Iterable[Fingerprint], cc: str | None) -> Scan:
        counted = elsewhere = None
        for fp in hits:
            if fp.false_positive:
                return _NOTHING
            if fp.applies_in(cc):
                counted = counted or fp
            else:
                elsewhere = elsewhere or fp
        if counted is not None:
            return Scan(counted=counted)
        return Scan(elsewhere=elsewhere) if elsewhere is not None else _NOTHING

    def scan_dns(self, answer: str, cc: str | None = None) -> Scan:
        """What a DNS answer (address or CNAME) matches, for an agent in ``cc``."""
        return self._decide(self._matcher("dns").hits(normal_address(answer).encode()), cc)

    def match_dns(self, answer: str, cc: str | None = None) -> Fingerprint | None:
        """The blockpage fingerprint a DNS answer matches (in ``cc``; None: anywhere)."""
        return self.scan_dns(answer, cc).counted

    def scan_response(
        self, headers: Iterable[tuple[str, str]], body: bytes | None, cc: str | None = None
    ) -> Scan:
        """What an HTTP response matches, for an agent in ``cc``; false positives first."""
        pairs = [(name.lower(), value) for name, value in headers]
        hits: list[Fingerprint] = []
        if body is not None:
            hits.extend(self._matcher("body").hits(body))
        lines = self._matcher("lines")
        for name, value in pairs:
            if lines.entries:
                hits.extend(lines.hits(_header_line(name, value)))
        for name in self._header_names:
            matcher = self._matcher(f"header.{name}")
            for header, value in pairs:
                if header == name:
                    hits.extend(matcher.hits(value.encode("utf-8", "replace")))
        if not hits:
            return _NOTHING
        return self._decide(sorted(set(hits), key=self._order.__getitem__), cc)

    def match_response(
        self, headers: Iterable[tuple[str, str]], body: bytes | None, cc: str | None = None
    ) -> Fingerprint | None:
        """The blockpage an HTTP response matches (in ``cc``), if any."""
        return self.scan_response(headers, body, cc).counted

    def to_json(self) -> dict[str, Any]:
        """The set as GET /api/v1/fingerprints gives it."""
        return {"digest": self.digest(), "fingerprints": [f.to_json() for f in self.entries]}


def _location(value: str) -> str:
    value = value.strip().lower()
    if value in ("body", "dns", "header", "response") or (
        value.startswith("header.") and len(value) > 7
    ):
        return value
    raise ValueError(
        f"location_found {value!r}: expected body, dns, header, header.<name> or response"
    )


def _countries(value: Any, source: str, where: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value or "").split(",")
    out = []
    for item in items:
        cc = str(item).strip().upper()
        if not cc:
            continue
        if not _CC_RE.match(cc):
            raise ConfigError(source, f"{where}: expected_countries", f"{cc!r} is not a country")
        out.append(cc)
    return tuple(out)


def fingerprint_from_row(row: Mapping[str, Any], source: str, where: str) -> Fingerprint:
    """One fingerprint from a CSV row or a JSON object; ``ConfigError`` names the field."""
    name = str(row.get("name") or "").strip()
    pattern = str(row.get("pattern") or "")
    if not name:
        raise ConfigError(source, f"{where}: name", "a fingerprint needs a name")
    if not pattern:
        raise ConfigError(source, f"{where}: pattern", "a fingerprint needs a pattern")
    if len(pattern) > MAX_PATTERN:
        raise ConfigError(source, f"{where}: pattern", f"longer than {MAX_PATTERN} characters")
    pattern_type = str(row.get("pattern_type") or "").strip().lower()
    if pattern_type not in PATTERN_TYPES:
        raise ConfigError(
            source,
            f"{where}: pattern_type",
            f"expected one of {', '.join(PATTERN_TYPES)}, got {pattern_type!r}",
        )
    try:
        location = _location(str(row.get("location_found") or ""))
    except ValueError as exc:
        raise ConfigError(source, f"{where}: location_found", str(exc)) from None
    if location == "dns" and pattern_type == "full":
        pattern = normal_address(pattern)
    countries = _countries(row.get("expected_countries"), source, where)
    named = _CP_COUNTRY_RE.match(name.lower())
    if not countries and named is not None:
        countries = (named.group(1).upper(),)
    fp = Fingerprint(
        name=name,
        scope=str(row.get("scope") or "").strip().lower(),
        location=location,
        pattern_type=pattern_type,
        pattern=pattern,
        expected_countries=countries,
        source=str(row.get("source") or "").strip(),
        exp_url=str(row.get("exp_url") or "").strip(),
        notes=str(row.get("notes") or "").strip(),
    )
    if pattern_type == "regexp":
        _check_regex(fp, source, where)
    return fp


def parse_fingerprints(text: str, source: str = "<fingerprints>") -> Fingerprints:
    """Fingerprints from OONI-style CSV text; ``ConfigError`` names the line and column."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise ConfigError(source, "line 1", f"missing columns: {', '.join(missing)}")
    entries = [fingerprint_from_row(row, source, f"line {reader.line_num}") for row in reader]
    return Fingerprints(entries)


def parse_censoredplanet(
    text: str, source: str = "<signatures>", *, false_positive: bool = False
) -> Fingerprints:
    """Censored Planet's JSON-lines signatures; ``false_positive`` for their fp file."""
    entries: list[Fingerprint] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"line {lineno}"
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            raise ConfigError(source, where, "not a JSON object") from None
        if not isinstance(doc, dict):
            raise ConfigError(source, where, "not a JSON object")
        name = doc.get("fingerprint")
        if not isinstance(name, str) or not name:
            raise ConfigError(source, f"{where}: fingerprint", "expected the signature's name")
        if false_positive:
            scope = FALSE_POSITIVE_SCOPE
        else:
            scope = _CP_SCOPES.get(name[:1].lower(), "unk") if name[1:2] == "_" else "unk"
        row = {
            "name": f"cp.{name}",
            "scope": scope,
            "location_found": "response",
            "pattern_type": "regexp",
            "pattern": doc.get("pattern"),
            "expected_countries": "",  # from the name, as for every cp. fingerprint
            "source": "censoredplanet/censoredplanet-analysis",
        }
        entries.append(fingerprint_from_row(row, source, where))
    return Fingerprints(entries)


def fingerprints_from_json(doc: Any, source: str = "GET /api/v1/fingerprints") -> Fingerprints:
    """The set in a collector's answer (``Fingerprints.to_json``); ``ConfigError`` if bad."""
    items = doc.get("fingerprints") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ConfigError(source, "fingerprints", "expected a list of fingerprints")
    entries = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(source, f"fingerprints[{i}]", "expected an object")
        entries.append(fingerprint_from_row(item, source, f"fingerprints[{i}]"))
    return Fingerprints(entries)


def _read(path: Path) -> str:
    try:
        with path.open("r", encoding="utf-8", newline="") as fh:
            text = fh.read(MAX_FINGERPRINT_FILE + 1)
    except FileNotFoundError:
        raise ConfigError(str(path), "", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc}") from None
    if len(text) > MAX_FINGERPRINT_FILE:
        raise ConfigError(str(path), "", f"larger than {MAX_FINGERPRINT_FILE} bytes")
    return text


def _is_json_lines(path: Path, text: str) -> bool:
    return path.suffix.lower() in (".json", ".jsonl", ".ndjson") or text.lstrip().startswith("{")


def load_fingerprints(path: Path | None = None) -> Fingerprints:
    """Fingerprints from ``path`` (OONI CSV or Censored Planet JSON lines), or the set
    shipped with filterwatch. Reads a file: call it from a thread or at start-up."""
    if path is None:
        text = resources.files("shared.data").joinpath("fingerprints.csv").read_text("utf-8")
        return parse_fingerprints(text, "shared/data/fingerprints.csv")
    text = _read(path)
    if _is_json_lines(path, text):
        false_positive = "false_positive" in path.name.lower().replace("-", "_")
        return parse_censoredplanet(text, str(path), false_positive=false_positive)
    return parse_fingerprints(text, str(path))


def fingerprint_files(path: Path) -> list[Path]:
    """``path`` itself, or the fingerprint files (.csv, .json, .jsonl) of a directory."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in (".csv", ".json", ".jsonl"))
    return [path]


def load_fingerprint_set(paths: Sequence[Path], *, shipped: bool = True) -> Fingerprints:
    """Every file of ``paths`` (directories walked one level) in order, then the shipped
    set unless ``shipped`` is false. Blocking: call it from a thread or at start-up."""
    sets = [load_fingerprints(p) for path in paths for p in fingerprint_files(path)]
    if shipped:
        sets.append(default_fingerprints())
    return Fingerprints().merged(*sets).compile()


@functools.cache
def default_fingerprints() -> Fingerprints:
    """The shipped fingerprints, read once."""
    return load_fingerprints()


@dataclass(slots=True)
class FingerprintBox:
    """The set an agent measures with: its own files and, once fetched, the collector's.
    Swapped whole between rounds (a measurement keeps the set it started with)."""

    local: Fingerprints
    current: Fingerprints = field(init=False)
    collector_digest: str | None = None  # of the collector's set in use (its ETag)

    def __post_init__(self) -> None:
        self.current = self.local

    def use_collector_set(self, collector: Fingerprints) -> None:
        """Measure with the agent's own set and ``collector``'s (compile it first)."""
        self.current = self.local.merged(collector).compile()
        self.collector_digest = collector.digest()
