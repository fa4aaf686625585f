"""The real-world samples in ``../shared/realdata`` (beside the repository, never in it)."""

from __future__ import annotations

from pathlib import Path

import pytest

REALDATA = (Path(__file__).resolve().parent.parent / ".." / "shared" / "realdata").resolve()


def realdata(sub: str) -> Path:
    """The sample at ``sub``; skips the test, saying why, where the samples are absent."""
    path = REALDATA / sub
    if not path.exists():
        pytest.skip(
            f"the real samples are not here ({path}): they live in ../shared/realdata beside"
            " the repository (see its PROVENANCE.md); CI has them"
        )
    return path
