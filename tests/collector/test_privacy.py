"""No volunteer's address is kept: not in the database, not in the logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from collector.app import make_app
from collector.config import CollectorConfig
from tests.collector.conftest import auth, batch, enroll, post_batch, record

ADDRESS = b"127.0.0.1"


async def test_no_client_address_in_database_or_logs(
    aiohttp_client: Any, config: CollectorConfig, capsys: Any
) -> None:
    """After enroll, whoami, targets, good and bad batches, the caller's address appears in
    no log event and nowhere in the SQLite file or its WAL."""
    with capture_logs() as events:
        client = await aiohttp_client(make_app(config))
        agent_id, token = await enroll(client)
        for path in ("/api/v1/whoami", "/api/v1/targets", "/healthz", "/metrics", "/missing"):
            await client.get(path, headers=auth(token))
        await post_batch(client, token, batch(agent_id, [record(i) for i in range(20)]))
        await post_batch(client, token, batch(agent_id, [record(30, blocking="x")]))
        await post_batch(client, token, None, raw=b"\xc1garbage")
        await post_batch(client, "fwt_wrong", batch(agent_id, [record(40)]))
        whoami = await (await client.get("/api/v1/whoami", headers=auth(token))).json()
        assert whoami["asn"] == 64500  # the address was looked up...
        db = Path(config.database.sqlite_path)
        files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]
        assert any(p.name.endswith("-wal") for p in files)
        for file in files:  # ...and is in no file of the database, WAL included
            assert ADDRESS not in file.read_bytes(), file.name
        await client.close()
    assert events, "the run logged nothing: the test would prove nothing"
    assert "127.0.0.1" not in repr(events)
    captured = capsys.readouterr()
    assert "127.0.0.1" not in captured.out + captured.err
