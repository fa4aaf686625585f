"""A third-party agent naming failures as OONI does loses no results: ingest maps the names
onto ours and keeps the original, in the store and in exports."""

from __future__ import annotations

from collector.exports import jsonl_bytes
from collector.filters import Filters
from collector.state import PSEUDONYM_KEY, STORE
from tests.collector.conftest import Client, batch, enroll, post_batch, record


async def test_ooni_failure_names_are_accepted_mapped_and_kept(client: Client) -> None:
    """Results with OONI's names are accepted (none rejected), stored with ours, and the
    export's failure_original column carries OONI's string."""
    agent_id, token = await enroll(client)
    names = ["ssl_invalid_certificate", "connection_refused_error", "unknown_failure: weird"]
    results = [
        record(i, failure=name, tls={"failure": name}, blocking="tls", accessible=False)
        for i, name in enumerate(names)
    ]
    resp = await post_batch(client, token, batch(agent_id, results))
    assert resp.status == 200
    assert await resp.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
    store = client.app[STORE]
    rows = [
        r async for chunk in store.export_rows(Filters(), client.app[PSEUDONYM_KEY]) for r in chunk
    ]
    got = sorted((r["failure"], r["failure_original"]) for r in rows)
    assert got == [
        ("connection_refused", "connection_refused_error"),
        ("ssl_failed_handshake", "ssl_invalid_certificate"),
        ("unknown_failure", "unknown_failure: weird"),
    ]
    assert b'"failure_original":"ssl_invalid_certificate"' in jsonl_bytes(rows)
