"""The target list: which URLs agents of each country measure.

Two formats are read. YAML, either a list (every country) or a mapping whose keys are
``global`` and country codes, each a list of URLs or of ``{url, category_code}``:

    global: [https://www.facebook.com/, {url: https://twitter.com/, category_code: GRP}]
    IR: [{url: http://www.bbc.com/persian, category_code: NEWS}]

and CSV in the Citizen Lab test-lists layout (``url,category_code,category_description,
date_added,source,notes``). A CSV file applies to every country; a directory of them is
read like the test-lists repository (its root, which holds ``lists/``, or ``lists/``
itself): ``global.csv`` for everyone, ``ir.csv`` for IR, and the regional lists for the
countries of their region (``cis.csv``: the README's "former Commonwealth of Independent
States nations", see ``REGIONAL_LISTS``). The category legend
(``00-LEGEND-category_codes.csv``, ``00-LEGEND-new_category_codes.csv``) names the
category codes. A directory with no list at all is an error, not an empty list.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import structlog
import yaml

from shared.errors import ConfigError

log = structlog.get_logger("collector.targets")

GLOBAL: Final = "global"
# Lists that apply to several countries. The test-lists README: "The only testing list that
# applies regionally (more than one country) is the CIS testing list which is intended for
# testing former Commonwealth of Independent States nations": the twelve former Soviet
# republics that were members (Georgia, Ukraine and Turkmenistan since left or associate).
REGIONAL_LISTS: Final[Mapping[str, frozenset[str]]] = {
    "cis": frozenset({"AM", "AZ", "BY", "GE", "KG", "KZ", "MD", "RU", "TJ", "TM", "UA", "UZ"}),
}
_LEGENDS: Final = {
    "00-LEGEND-category_codes.csv": ("CategoryCode", "CategoryName"),
    "00-LEGEND-new_category_codes.csv": ("New Code", "Category Description"),
}
_CC_RE: Final = re.compile(r"^[A-Za-z]{2}$")
_DEFAULT_CATEGORY: Final = "MISC"


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    category_code: str = _DEFAULT_CATEGORY

    def to_json(self) -> dict[str, str]:
        return {"url": self.url, "category_code": self.category_code}


@dataclass(frozen=True, slots=True)
class TargetList:
    """Targets per country code (upper case) and for everyone (``global``)."""

    by_country: Mapping[str, tuple[Target, ...]] = field(default_factory=dict)
    categories: Mapping[str, str] = field(default_factory=dict)  # code -> name (the legend)

    def for_country(self, cc: str | None) -> list[Target]:
        """The global targets, the country's own, then its regions', each URL once."""
        seen: set[str] = set()
        out: list[Target] = []
        groups = [self.by_country.get(GLOBAL, ())]
        if cc:
            groups.append(self.by_country.get(cc.upper(), ()))
            groups.extend(
                self.by_country.get(region, ())
                for region, members in REGIONAL_LISTS.items()
                if cc.upper() in members
            )
        for group in groups:
            for target in group:
                if target.url not in seen:
                    seen.add(target.url)
                    out.append(target)
        return out

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_country.values())

    def sizes(self) -> dict[str, int]:
        """Targets per list: ``global``, each country code, each regional list."""
        return {name: len(items) for name, items in sorted(self.by_country.items())}


def _check_url(url: str, source: str, where: str) -> str:
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(source, where, f"{url[:80]!r} is not an http or https URL")
    return url


def _target(item: Any, source: str, where: str) -> Target:
    if isinstance(item, str):
        return Target(_check_url(item, source, where))
    if isinstance(item, dict):
        unknown = set(item) - {"url", "category_code"}
        if unknown:
            raise ConfigError(source, f"{where}.{sorted(unknown)[0]}", "unknown key")
        url = item.get("url")
        if not isinstance(url, str):
            raise ConfigError(source, f"{where}.url", "expected a URL")
        category = item.get("category_code", _DEFAULT_CATEGORY)
        if not isinstance(category, str):
            raise ConfigError(source, f"{where}.category_code", "expected a string")
        return Target(_check_url(url, source, f"{where}.url"), category or _DEFAULT_CATEGORY)
    raise ConfigError(source, where, "expected a URL or {url, category_code}")


def _group(items: Any, source: str, key: str) -> tuple[Target, ...]:
    if not isinstance(items, list):
        raise ConfigError(source, key, "expected a list of targets")
    return tuple(_target(item, source, f"{key}[{i}]") for i, item in enumerate(items))


def parse_yaml(text: str, source: str) -> TargetList:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(source, "", "not valid YAML") from None
    if data is None:
        return TargetList({})
    if isinstance(data, list):
        return TargetList({GLOBAL: _group(data, source, "")})
    if not isinstance(data, dict):
        raise ConfigError(source, "", "expected a list of targets or a mapping of countries")
    by_country: dict[str, tuple[Target, ...]] = {}
    for key, items in data.items():
        name = str(key)
        if name.lower() == GLOBAL or name.lower() in REGIONAL_LISTS:
            by_country[name.lower()] = _group(items, source, name)
        elif _CC_RE.match(name):
            by_country[name.upper()] = _group(items, source, name)
        else:
            raise ConfigError(
                source, name, "expected 'global', a regional list (cis) or a country code"
            )
    return TargetList(by_country)


def parse_csv(text: str, source: str) -> tuple[Target, ...]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "url" not in reader.fieldnames:
        raise ConfigError(source, "", "a CSV target list needs a header with a 'url' column")
    out: list[Target] = []
    for row in reader:
        url = (row.get("url") or "").strip()
        if not url:
            continue
        where = f"line {reader.line_num}"
        out.append(
            Target(
                _check_url(url, source, where),
                (row.get("category_code") or "").strip() or _DEFAULT_CATEGORY,
            )
        )
    return tuple(out)


def _legend(path: Path, code_column: str, name_column: str) -> dict[str, str]:
    reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))
    if code_column not in (reader.fieldnames or ()):
        raise ConfigError(str(path), "line 1", f"expected a {code_column!r} column")
    return {
        (row.get(code_column) or "").strip(): (row.get(name_column) or "").strip()
        for row in reader
        if (row.get(code_column) or "").strip()
    }


def _csv_dir(directory: Path) -> TargetList:
    lists = directory / "lists"
    if lists.is_dir():
        directory = lists  # the root of a test-lists checkout
    by_country: dict[str, tuple[Target, ...]] = {}
    categories: dict[str, str] = {}
    for path in sorted(directory.glob("*.csv")):
        stem = path.stem.lower()
        if path.name in _LEGENDS:
            categories.update(_legend(path, *_LEGENDS[path.name]))
        elif stem == GLOBAL or stem in REGIONAL_LISTS:
            by_country[stem] = parse_csv(path.read_text(encoding="utf-8"), str(path))
        elif _CC_RE.match(stem):
            by_country[stem.upper()] = parse_csv(path.read_text(encoding="utf-8"), str(path))
    if not by_country:
        raise ConfigError(
            str(directory),
            "",
            "no target list here: expected global.csv, <country>.csv (test-lists' lists/)"
            " or a test-lists checkout holding lists/",
        )
    return TargetList(by_country, categories)


def log_targets(targets: TargetList, path: Path | None) -> None:
    """Say at start-up what the target list holds; an empty one is a warning."""
    if len(targets) == 0:
        log.warning(
            "no_targets",
            path=str(path) if path else None,
            hint="set targets_path to a YAML or CSV list or to the test-lists repository",
        )
        return
    log.info(
        "targets_loaded",
        path=str(path) if path else None,
        targets=len(targets),
        per_list=targets.sizes(),
        categories=len(targets.categories),
    )


def load_targets(path: Path | None) -> TargetList:
    """Read the target list at ``path`` (blocking: call it from a thread); None: empty."""
    if path is None:
        return TargetList({})
    try:
        if path.is_dir():
            return _csv_dir(path)
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read the target list: {exc.strerror}") from None
    if path.suffix.lower() == ".csv":
        return TargetList({GLOBAL: parse_csv(text, str(path))})
    return parse_yaml(text, str(path))
