"""One strict loader from YAML to frozen dataclasses.

Every configuration in filterwatch is a tree of frozen dataclasses. ``load_config`` reads a
YAML file with ``yaml.safe_load`` and builds that tree, refusing unknown keys, wrong types
and bad values with one ``ConfigError`` naming the file and the key path, for example
``agent.yaml: probes.timeout_s: expected a number, got "ten"``. Nothing past the loader
sees a raw dict, and nothing past it checks a configured value again: what the program
needs in another form (seconds of a duration, parsed networks) the dataclass works out once
in ``__post_init__`` into a field of its own (``init=False``).

Supported field types: ``str``, ``int``, ``float`` (ints accepted), ``bool``, ``Path``,
``Literal[...]``, ``X | None``, ``tuple[X, ...]``, ``dict[str, X]`` and nested dataclasses.
Durations may be written as ``30``, ``"30s"``, ``"5m"``, ``"2h"`` or ``"7d"`` where the
field's name ends in ``_s`` (seconds).

A dataclass checks its values in ``__post_init__`` with the helpers here (``require``,
``parse_with``, ``cidr_ranges``, ``duration``, ``http_url``), which raise ``ConfigError``
with no file and the field's name; the loader adds the file and the path. A ``Path`` field
declared with ``metadata=EXISTING`` names a file or directory that must exist
(``EXISTING_FILE``: a file): the loaders of the agent and the collector check that
(``check_files=True``); the example configurations in deploy/ name files of another machine
and are read without it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

import yaml

from shared.errors import ConfigError

T = TypeVar("T")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# ``field(metadata=EXISTING)``: the path (or each path of a tuple) must exist;
# ``EXISTING_FILE``: and be a file.
EXISTING: Final[Mapping[str, str]] = {"must_exist": "path"}
EXISTING_FILE: Final[Mapping[str, str]] = {"must_exist": "file"}

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATIONS: Final = "a duration like 30s, 5m, 2h or 7d"
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"5m"``, ``"2h"``, ``"7d"``; ValueError otherwise."""
    match = _DURATION_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m, 2h or 7d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def require(ok: bool, key: str, problem: str) -> None:
    """Raise ``ConfigError`` at the field ``key`` with ``problem`` unless ``ok``."""
    if not ok:
        raise ConfigError("", key, problem)


def cidr_ranges(key: str, cidrs: Iterable[str]) -> tuple[Network, ...]:
    """``cidrs`` as networks; ``ConfigError`` at ``key`` for the first that is not one."""
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise ConfigError("", key, f"{cidr!r} is not a CIDR range") from None
    return tuple(networks)


def parse_with(key: str, parse: Callable[[str], T], text: str) -> T:
    """``parse(text)``, a ``ValueError`` it raises a ``ConfigError`` at ``key``."""
    try:
        return parse(text)
    except ValueError as exc:
        raise ConfigError("", key, str(exc)) from None


def duration(key: str, text: str, minimum: float) -> float:
    """The seconds in ``text`` (``"7d"``); ``ConfigError`` at ``key`` if not one or too short."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise ConfigError("", key, f"expected {_DURATIONS}, got {_describe(text)}") from None
    require(seconds >= minimum, key, f"must be at least {_shown_seconds(minimum)}")
    return seconds


def _shown_seconds(seconds: float) -> str:
    return f"{seconds / 86400:g}d" if seconds >= 86400 else f"{seconds:g}s"


def http_url(key: str, url: str, *, shown: bool = True) -> None:
    """``ConfigError`` at ``key`` unless ``url`` is an http:// or https:// URL with a host;
    the message quotes the URL unless ``shown`` is false."""
    parts = urlsplit(url)
    require(
        parts.scheme in ("http", "https") and bool(parts.hostname),
        key,
        "must be an http:// or https:// URL with a host" + (f", got {url!r}" if shown else ""),
    )


def derived() -> Any:
    """A field the dataclass works out in ``__post_init__`` (``derive``); not a key."""
    return dataclasses.field(init=False, repr=False, compare=False)


def derive(instance: object, name: str, value: object) -> None:
    """Set the ``init=False`` field ``name`` of a frozen dataclass from ``__post_init__``."""
    object.__setattr__(instance, name, value)


class _Builder:
    def __init__(self, source: str, check_files: bool) -> None:
        self.source = source
        self.check_files = check_files

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.source, key, problem)

    def build(self, tp: Any, value: Any, key: str) -> Any:
        origin = get_origin(tp)
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            return self.build_dataclass(tp, value, key)
        if origin in (Union, types.UnionType):
            options = get_args(tp)
            if value is None and type(None) in options:
                return None
            non_none = [o for o in options if o is not type(None)]
            if len(non_none) == 1:
                return self.build(non_none[0], value, key)
            raise self.error(key, f"unsupported union type {tp}")
        if origin is Literal:
            allowed = get_args(tp)
            if value not in allowed:
                choices = ", ".join(str(a) for a in allowed)
                raise self.error(key, f"expected one of {choices}, got {_describe(value)}")
            return value
        if origin is tuple:
            item_tp = get_args(tp)[0]
            if not isinstance(value, list):
                raise self.error(key, f"expected a list, got {_describe(value)}")
            return tuple(self.build(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
        if origin is dict:
            _, val_tp = get_args(tp)
            if not isinstance(value, dict):
                raise self.error(key, f"expected a mapping, got {_describe(value)}")
            return {str(k): self.build(val_tp, v, f"{key}.{k}") for k, v in value.items()}
        if tp is bool:
            if not isinstance(value, bool):
                raise self.error(key, f"expected true or false, got {_describe(value)}")
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.error(key, f"expected a whole number, got {_describe(value)}")
            return value
        if tp is float:
            if key.rsplit(".", 1)[-1].endswith("_s") and isinstance(value, str):
                try:
                    return parse_duration(value)
                except ValueError:
                    problem = f"expected a number, got {_describe(value)} (or {_DURATIONS})"
                    raise self.error(key, problem) from None
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.error(key, f"expected a number, got {_describe(value)}")
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                raise self.error(key, f"expected a string, got {_describe(value)}")
            return value
        if tp is Path:
            if not isinstance(value, str):
                raise self.error(key, f"expected a path, got {_describe(value)}")
            return Path(value).expanduser()
        raise self.error(key, f"unsupported type {tp}")

    def build_dataclass(self, cls: type[Any], value: Any, key: str) -> Any:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            where = key or "the top level"
            raise self.error(key, f"expected a mapping at {where}, got {_describe(value)}")
        hints = get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        for name in value:
            if name not in fields:
                known = ", ".join(sorted(fields))
                raise self.error(_join(key, str(name)), f"unknown key (known keys: {known})")
        kwargs = {}
        for name, f in fields.items():
            sub_key = _join(key, name)
            if name in value:
                kwargs[name] = self.build(hints[name], value[name], sub_key)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise self.error(sub_key, "required key is missing")
        built = self.construct(cls, kwargs, key)
        if self.check_files:
            # After the dataclass's own checks: a path that goes with another is named first.
            for name in kwargs:
                kind = fields[name].metadata.get("must_exist")
                if kind is not None:
                    self.require_paths(kwargs[name], _join(key, name), files_only=kind == "file")
        return built

    def construct(self, cls: type[Any], kwargs: dict[str, Any], key: str) -> Any:
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            if exc.path:
                raise
            # The dataclass's own check: it names its field, the loader the file and the path.
            raise self.error(_join(key, exc.key), exc.problem) from None
        except (ValueError, TypeError) as exc:
            # Not one of our checks (they raise ConfigError): the dataclass as a whole is named.
            raise self.error(key, str(exc)) from None

    def require_paths(
        self, value: Path | tuple[Path, ...] | None, key: str, *, files_only: bool
    ) -> None:
        paths = value if isinstance(value, tuple) else (value,)
        for i, path in enumerate(paths):
            if path is not None and not (path.is_file() if files_only else path.exists()):
                where = f"{key}[{i}]" if isinstance(value, tuple) else key
                raise self.error(where, f"{path}: no such file")


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key and name else key or name


def config_from_mapping(
    cls: type[T], data: Any, source: str = "<config>", *, check_files: bool = False
) -> T:
    """Build ``cls`` from an already parsed mapping, with the same checks as a file."""
    return typing.cast(T, _Builder(source, check_files).build_dataclass(cls, data, ""))


def load_config(cls: type[T], path: Path | str, *, check_files: bool = False) -> T:
    """Read the YAML file at ``path`` into ``cls``; ``ConfigError`` names the file and key.

    With ``check_files``, every path declared ``EXISTING`` must exist."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "", "no such file") from None
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(path), "", f"{where}not valid YAML") from None
    return config_from_mapping(cls, data, str(path), check_files=check_files)
