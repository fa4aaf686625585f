"""The files a reading command is given: files as named, directories walked for the kinds
of file it reads (recursively, in name order)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from shared.errors import FilterwatchError


def input_files(
    paths: Iterable[Path],
    kind: Callable[[Path], str | None],
    error: type[FilterwatchError],
    not_one: str,
) -> list[Path]:
    """The files named by ``paths``: what ``kind`` knows in a directory, a file as named
    (``error``: "PATH: ``not_one``" where ``kind`` does not know it, or nothing is there)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and kind(p) is not None))
        elif path.is_file():
            if kind(path) is None:
                raise error(f"{path}: {not_one}")
            found.append(path)
        else:
            raise error(f"{path}: no such file or directory")
    return found
