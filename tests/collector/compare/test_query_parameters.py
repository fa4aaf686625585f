"""Query parameters of the analyst endpoints are checked before any work (issue 9,
finding 4): every bad one is a 400 JSON error whose detail starts with its query name, and
an export answers nothing but that error (no 200 whose body never finishes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from collector.app import make_app
from collector.config import load_collector_config
from tests.collector.compare.test_cli_and_api import AUTH, config_file  # noqa: F401 - the fixture

ENDPOINTS = ("/api/v1/leaks", "/api/v1/compare", "/api/v1/export?format=csv")
BAD = [
    ("asn=%C2%B2", "bad_filter", "asn"),  # a superscript two: str.isdigit says yes
    ("asn=%D9%A3", "bad_filter", "asn"),  # an Arabic-Indic three
    ("asn=9223372036854775808", "bad_filter", "asn"),  # 2**63
    ("asn=18446744073709551616", "bad_filter", "asn"),
    ("asn=4294967296", "bad_filter", "asn"),  # 2**32: no such AS number
    ("asn=-1", "bad_filter", "asn"),
    ("asn=", "bad_filter", "asn"),
    ("bucket=" + "9" * 400 + "w", "bad_filter", "bucket"),  # overflows to infinity
    ("bucket=99999999999999999999d", "bad_filter", "bucket"),
    ("bucket=0s", "bad_filter", "bucket"),
    ("bucket=nan", "bad_filter", "bucket"),
    ("bucket=-5m", "bad_filter", "bucket"),
    ("since=" + "9" * 400 + "w", "bad_filter", "since"),
    ("since=2026-02-01&until=2026-01-01", "bad_filter", "since"),
    ("until=yesterday", "bad_filter", "until"),
    ("cc=IRN", "bad_filter", "cc"),
    ("cc=%FF", "bad_filter", "cc"),  # not UTF-8: decoded as U+FFFD
    ("domain=a%00b", "bad_parameter", "domain"),
    ("colour=blue", "bad_parameter", "colour"),
    ("asn=1&asn=2", "bad_parameter", "asn"),
]


@pytest.mark.parametrize(("query", "error", "name"), BAD)
async def test_bad_parameter_is_a_400_naming_it(
    config_file: Path,  # noqa: F811
    aiohttp_client: Any,
    query: str,
    error: str,
    name: str,
) -> None:
    """A bad parameter on each analyst endpoint: 400, the code, the query name first."""
    client = await aiohttp_client(make_app(load_collector_config(config_file)))
    for endpoint in ENDPOINTS:
        joiner = "&" if "?" in endpoint else "?"
        resp = await client.get(f"{endpoint}{joiner}{query}", headers=AUTH)
        assert resp.status == 400, await resp.text()
        assert resp.content_type == "application/json"
        body = await resp.json()
        assert body["error"] == error
        assert body["detail"].startswith(f"{name}: ")


async def test_export_format_problems_come_first(
    config_file: Path,  # noqa: F811
    aiohttp_client: Any,
) -> None:
    """A missing or unknown format is bad_format; an unknown parameter beside it is named."""
    client = await aiohttp_client(make_app(load_collector_config(config_file)))
    resp = await client.get("/api/v1/export", headers=AUTH)
    assert (await resp.json())["error"] == "bad_format"
    resp = await client.get("/api/v1/export?format=csv&fromat=csv", headers=AUTH)
    assert (await resp.json())["detail"].startswith("fromat: unknown query parameter")


async def test_good_parameters_still_answer(
    config_file: Path,  # noqa: F811
    aiohttp_client: Any,
) -> None:
    """AS-prefixed numbers, relative times and buckets in every unit are accepted."""
    client = await aiohttp_client(make_app(load_collector_config(config_file)))
    query = "asn=AS31549&since=3650d&until=2099-01-01T00:00:00Z&bucket=90m&cc=ir&domain=x.org"
    for endpoint in ENDPOINTS:
        joiner = "&" if "?" in endpoint else "?"
        resp = await client.get(f"{endpoint}{joiner}{query}", headers=AUTH)
        assert resp.status == 200, await resp.text()


async def test_an_export_failing_mid_stream_aborts_the_connection(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    """A row the Parquet encoder cannot write (an AS number stored as text by hand) ends
    the export with a broken transfer, never a complete-looking file; the collector lives."""
    import sqlite3

    import aiohttp

    from collector.config import CollectorConfig, DatabaseConfig
    from tests.collector.analysis.scenarios import (
        FIVE_ISPS,
        STORY_DOMAINS,
        make_rows,
        story_verdict,
    )
    from tests.collector.compare.helpers import store_with

    path = tmp_path / "store.sqlite3"
    store_with(path, make_rows(FIVE_ISPS, STORY_DOMAINS, 2, story_verdict)).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE measurements SET asn = 'not a number' WHERE rowid = 1")
    config = CollectorConfig(
        database=DatabaseConfig(sqlite_path=path), analyst_tokens=(AUTH["Authorization"][7:],)
    )
    client = await aiohttp_client(make_app(config))
    resp = await client.get("/api/v1/export?format=parquet", headers=AUTH)
    assert resp.status == 200  # the status line went out before the failing row was read
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    healthy = await client.get("/healthz")
    assert healthy.status == 200
