"""The probes' TLS contexts are built once, however many measurements start together."""

from __future__ import annotations

import asyncio
from pathlib import Path

import trustme

from shared.probes.tls import tls_contexts


async def test_concurrent_callers_share_one_build(tmp_path: Path) -> None:
    """Thirty-two measurements asking at once for a new CA file's contexts get the very
    same objects: one build, not thirty-two."""
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    results = await asyncio.gather(*(tls_contexts(ca_file) for _ in range(32)))
    assert len({id(r) for r in results}) == 1
    assert await tls_contexts(ca_file) is results[0]
