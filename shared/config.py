"""One strict loader from YAML to frozen dataclasses.

Every configuration in filterwatch is a tree of frozen dataclasses. ``load_config`` reads a
YAML file with ``yaml.safe_load`` and builds that tree, refusing unknown keys and wrong
types with a message naming the file and the key path, for example
``agent.yaml: probes.timeout_s: expected a number, got "ten"``. Nothing past the loader
sees a raw dict.

Supported field types: ``str``, ``int``, ``float`` (ints accepted), ``bool``, ``Path``,
``Literal[...]``, ``X | None``, ``tuple[X, ...]``, ``dict[str, X]`` and nested dataclasses.
Durations may be written as ``30``, ``"30s"``, ``"5m"``, ``"2h"`` or ``"7d"`` where the
field's name ends in ``_s`` (seconds).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from shared.errors import ConfigError

T = TypeVar("T")

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
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


class _Builder:
    def __init__(self, source: str) -> None:
        self.source = source

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
                except ValueError as exc:
                    raise self.error(key, str(exc)) from None
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
            problem = f"expected a mapping at {where}, got {_describe(value)}"
            raise ConfigError(self.source, key, problem)
        hints = get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        for name in value:
            if name not in fields:
                known = ", ".join(sorted(fields))
                raise self.error(
                    f"{key}.{name}" if key else str(name), f"unknown key (known keys: {known})"
                )
        kwargs = {}
        for name, f in fields.items():
            sub_key = f"{key}.{name}" if key else name
            if name in value:
                kwargs[name] = self.build(hints[name], value[name], sub_key)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise self.error(sub_key, "required key is missing")
        try:
            return cls(**kwargs)
        except (ValueError, TypeError) as exc:
            # A check that names its field ("timeout_s: must be ...") is reported at that key.
            message = str(exc)
            name, sep, problem = message.partition(": ")
            if sep and name.split("[", 1)[0] in fields:
                raise ConfigError(self.source, f"{key}.{name}" if key else name, problem) from None
            raise ConfigError(self.source, key, message) from None


def config_from_mapping(cls: type[T], data: Any, source: str = "<config>") -> T:
    """Build ``cls`` from an already parsed mapping, with the same checks as a file."""
    return typing.cast(T, _Builder(source).build_dataclass(cls, data, ""))


def load_config(cls: type[T], path: Path | str) -> T:
    """Read the YAML file at ``path`` into ``cls``; ``ConfigError`` names the file and key."""
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
    return config_from_mapping(cls, data, str(path))
