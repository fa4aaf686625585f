"""OONI measurements as OONI publishes them, one decoded document at a time.

Accepted, files or directories of them (walked recursively, in name order):

- one JSON document per file, as OONI's API returns it: the measurement itself
  (``/api/v1/raw_measurement``), or ``measurement_meta`` with ``raw_measurement`` (a JSON
  string or object), or a list of measurements;
- JSON lines, one measurement a line (``.jsonl``; OONI's public bucket since 2020:
  ``raw/YYYYMMDD/HH/CC/webconnectivity/*.jsonl.gz``);
- ``.gz`` of either, and the bucket's older ``.tar.gz`` "postcans" (each member a JSON
  document, the measurement under ``content``).

Nothing here judges a measurement: documents that cannot be decoded come out as ``Bad``
with a reason, so that the caller counts them and one bad line costs only itself.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import msgspec

from collector.inputs import input_files
from shared.errors import FilterwatchError

_JSON_DECODER: Final = msgspec.json.Decoder()
_SUFFIXES: Final = (".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz", ".ndjson.gz",
                    ".tar.gz", ".tgz", ".gz")  # fmt: skip


class OoniReadError(FilterwatchError):
    """An OONI input could not be found or opened."""


@dataclass(frozen=True, slots=True)
class Bad:
    """A document that could not be decoded: the reason and where."""

    reason: str
    where: str


def measurement_files(paths: Iterable[Path]) -> list[Path]:
    """The files named by ``paths``; directories are walked for OONI's file types."""
    expected = "not an OONI file (expected .json, .jsonl, .gz or .tar.gz)"
    return input_files(paths, _kind, OoniReadError, expected)


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def documents(path: Path) -> Iterator[Any | Bad]:
    """Every measurement document in one file (lists and API wrappers unwrapped)."""
    kind = _kind(path) or ""
    try:
        if kind in (".tar.gz", ".tgz"):
            yield from _postcan(path)
            return
        opened: Any = gzip.open(path, "rb") if kind.endswith(".gz") else path.open("rb")  # noqa: SIM115
        with opened as fh:
            inner = kind.removesuffix(".gz") if kind != ".gz" else _inner_kind(path)
            if inner in (".jsonl", ".ndjson"):
                yield from _lines(fh, str(path))
            else:
                yield from _whole_or_lines(fh.read(), str(path))
    except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:
        yield Bad("unreadable_file", f"{path}: {exc}")


def _inner_kind(path: Path) -> str:
    stem = path.name.lower().removesuffix(".gz")
    return ".jsonl" if stem.endswith((".jsonl", ".ndjson")) else ".json"


def _lines(fh: IO[bytes], where: str) -> Iterator[Any | Bad]:
    for number, line in enumerate(fh, 1):
        if not line.strip():
            continue
        try:
            doc = _JSON_DECODER.decode(line)
        except msgspec.DecodeError:
            yield Bad("bad_json", f"{where}: line {number}")
            continue
        yield from unwrap(doc, f"{where}: line {number}")


def _whole_or_lines(data: bytes, where: str) -> Iterator[Any | Bad]:
    try:
        doc = _JSON_DECODER.decode(data)
    except msgspec.DecodeError:
        # A .json file holding JSON lines (as some tools name them) reads line by line.
        yield from _lines(io.BytesIO(data), where)
        return
    yield from unwrap(doc, where)


def _postcan(path: Path) -> Iterator[Any | Bad]:
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            if not member.isfile():
                continue
            fh = tar.extractfile(member)
            if fh is None:
                continue
            where = f"{path}: {member.name}"
            data = fh.read()
            if member.name.endswith(".gz"):
                data = gzip.decompress(data)
            yield from _whole_or_lines(data, where)


def unwrap(doc: Any, where: str) -> Iterator[Any | Bad]:
    """The measurements inside a decoded document (API wrappers, lists, postcan entries)."""
    if isinstance(doc, list):
        for i, item in enumerate(doc):
            yield from unwrap(item, f"{where} [{i}]")
        return
    if isinstance(doc, dict):
        raw = doc.get("raw_measurement")
        if raw is not None and "test_keys" not in doc:
            if isinstance(raw, str):
                try:
                    raw = _JSON_DECODER.decode(raw.encode("utf-8"))
                except msgspec.DecodeError:
                    yield Bad("bad_json", f"{where}: raw_measurement")
                    return
            yield from unwrap(raw, where)
            return
        content = doc.get("content")
        if isinstance(content, dict) and "test_keys" not in doc and doc.get("format") == "json":
            yield content  # a postcan entry
            return
    yield doc
