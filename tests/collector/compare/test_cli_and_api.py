"""`collector leaks`, `collector export`, `compare` and the HTTP endpoints agree byte for byte."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient

from collector.app import make_app
from collector.config import load_collector_config
from filterwatch.cli import main
from tests.collector.analysis.scenarios import (
    FIVE_ISPS,
    STORY_DOMAINS,
    Isp,
    make_rows,
    story_verdict,
)
from tests.collector.compare.helpers import store_with

TOKEN = "analyst-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ECHO = Isp("Echo", 64605, 3)


def story_with_divergences(isp: Isp, domain: str, b: int, agent: int) -> str:
    """The 2013 story, and Echo: never filters bbc.com, blocks twitter.com 70 % of the time."""
    if isp is ECHO:
        if domain == "bbc.com":
            return "ok"
        if domain == "twitter.com":
            return "ok" if (3 * b + agent) % 10 < 3 else "dns"
        return story_verdict(FIVE_ISPS[0], domain, b, agent)
    return story_verdict(isp, domain, b, agent)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    rows = make_rows((*FIVE_ISPS, ECHO), STORY_DOMAINS, 12, story_with_divergences)
    conn = store_with(tmp_path / "store.sqlite3", rows)
    conn.close()
    path = tmp_path / "collector.yaml"
    path.write_text(
        f"database: {{sqlite_path: {tmp_path / 'store.sqlite3'}}}\nanalyst_tokens: [{TOKEN}]\n"
    )
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return capsys.readouterr().out


async def run_cli_off_loop(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The command on a thread: it runs its own event loop, as it does from a shell."""
    return await asyncio.to_thread(run_cli, capsys, *argv)


def test_compare_on_every_format_equals_collector_leaks(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """compare on CSV, JSONL and Parquet exports prints the same events as `collector leaks`."""
    cfg = str(config_file)
    leaks = run_cli(capsys, "collector", "leaks", "--json", "--config", cfg)
    doc = json.loads(leaks)
    assert doc["leaks"][0]["domains"] == ["facebook.com", "twitter.com"]
    assert doc["leaks"][0]["kind"] == "lapse"
    assert doc["leaks"][0]["baseline_blocked_share"] == 1.0
    assert doc["leaks"][0]["then_lifted_nationally_at"] is None
    assert [(d["asn"], d["domains"], d["kind"]) for d in doc["divergences"]] == [
        (64605, ["twitter.com"], "partial"),
        (64605, ["bbc.com"], "unfiltered"),
    ]
    answers = []
    for fmt in ("csv", "jsonl", "parquet"):
        out = tmp_path / f"export.{fmt}"
        run_cli(capsys, "collector", "export", "--format", fmt, "--out", str(out), "--config", cfg)
        doc = json.loads(run_cli(capsys, "compare", str(out), "--format", "json"))
        answers.append(doc)
        assert json.dumps({k: doc[k] for k in ("leaks", "uncorroborated", "divergences")},
                          indent=2, sort_keys=True) + "\n" == leaks  # fmt: skip
    assert answers[0] == answers[1] == answers[2]
    table = run_cli(
        capsys, "compare", str(tmp_path / "export.csv"), str(tmp_path / "export.parquet")
    )
    assert "AS31549 Shatel (IR): facebook.com, twitter.com accessible" in table
    assert "Leaks: 1" in table
    assert "Echo (AS64605) has never filtered bbc.com, which 5 of 5 other ISPs block" in table
    assert "Echo (AS64605) blocks twitter.com only 67% of the time, which 4 of 5" in table


def test_compare_writes_an_html_report(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """compare --format html --out writes one page with the event and the heatmaps."""
    export = tmp_path / "e.jsonl"
    run_cli(capsys, "collector", "export", "--format", "jsonl", "--out", str(export),
            "--config", str(config_file))  # fmt: skip
    page = tmp_path / "report" / "leaks.html"
    run_cli(capsys, "compare", str(export), "--format", "html", "--out", str(page))
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.count("<svg") == 4
    assert "AS31549 Shatel</b> (IR) let through" in text


def test_compare_names_an_unreadable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """compare on a broken export exits 2 and names the file."""
    broken = tmp_path / "broken.csv"
    broken.write_text("measurement_id,measured_at\nx,not-a-time\n")
    assert main(["compare", str(broken)]) == 2
    assert "broken.csv" in capsys.readouterr().err


def test_leaks_in_words_and_filters(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`collector leaks` says the event in words, and --asn narrows it to nothing elsewhere."""
    cfg = str(config_file)
    text = run_cli(capsys, "collector", "leaks", "--config", cfg)
    assert "from 2013-09-16T04:00:00Z until 2013-09-16T08:00:00Z" in text
    assert "24 measurements, 3 distinct agents, 100% accessible" in text
    other = run_cli(capsys, "collector", "leaks", "--json", "--asn", "58224", "--config", cfg)
    assert json.loads(other) == {"leaks": [], "uncorroborated": [], "divergences": []}


def test_asn_and_domain_narrow_the_answer_not_the_evidence(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--asn 31549` (and `--domain`) keep Shatel's leak: the other ISPs stay the evidence it
    is compared with, on the store and in compare alike; only the answer is narrowed."""
    cfg = str(config_file)
    whole = json.loads(run_cli(capsys, "collector", "leaks", "--json", "--config", cfg))
    export = tmp_path / "all.csv"
    run_cli(capsys, "collector", "export", "--format", "csv", "--out", str(export), "--config", cfg)
    for flags in (["--asn", "31549"], ["--asn", "AS31549", "--domain", "twitter.com"]):
        store = json.loads(run_cli(capsys, "collector", "leaks", "--json", *flags, "--config", cfg))
        assert [e["asn"] for e in store["leaks"]] == [31549]
        assert store["divergences"] == []
        compared = json.loads(run_cli(capsys, "compare", str(export), "--format", "json", *flags))
        assert {k: compared[k] for k in store} == store
        assert [row["asn"] for row in compared["isps"]] == [31549]
    assert store["leaks"][0]["domains"] == ["twitter.com"]
    assert json.loads(run_cli(capsys, "collector", "leaks", "--json", "--asn", "31549",
                              "--config", cfg))["leaks"] == whole["leaks"]  # fmt: skip
    echo = json.loads(run_cli(capsys, "compare", str(export), "--format", "json", "--asn",
                              "64605"))  # fmt: skip
    assert echo["divergences"] == whole["divergences"] and echo["leaks"] == []


def test_since_after_until_on_the_command_line_exits_2(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--since after --until names both flags and exits 2, on the store and in compare."""
    argv = ["--since", "2013-09-17", "--until", "2013-09-16"]
    assert main(["collector", "leaks", *argv, "--config", str(config_file)]) == 2
    assert "--since" in capsys.readouterr().err
    assert main(["compare", str(config_file), *argv]) == 2
    assert "--until" in capsys.readouterr().err


def test_bad_filter_on_the_command_line_exits_2(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad --since names the flag and exits 2."""
    assert main(["collector", "leaks", "--since", "yesterday", "--config", str(config_file)]) == 2
    assert "--since" in capsys.readouterr().err


async def test_http_endpoints_answer_like_the_commands(
    config_file: Path,
    tmp_path: Path,
    aiohttp_client: AiohttpClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GET /api/v1/leaks and /compare give the commands' bytes; the streamed Parquet export
    compares to the same answer."""
    cfg = str(config_file)
    leaks_cli = await run_cli_off_loop(capsys, "collector", "leaks", "--json", "--config", cfg)
    client = await aiohttp_client(make_app(load_collector_config(config_file)))

    resp = await client.get("/api/v1/leaks", headers=AUTH)
    assert resp.status == 200
    assert await resp.text() == leaks_cli

    resp = await client.get("/api/v1/export", params={"format": "parquet"}, headers=AUTH)
    assert resp.status == 200
    export = tmp_path / "http.parquet"
    export.write_bytes(await resp.read())
    compare_cli = await run_cli_off_loop(capsys, "compare", str(export), "--format", "json")
    resp = await client.get("/api/v1/compare", headers=AUTH)
    assert await resp.text() == compare_cli

    resp = await client.get(
        "/api/v1/export", params={"format": "csv", "asn": "31549"}, headers=AUTH
    )
    lines = (await resp.text()).splitlines()
    assert lines[0].startswith("measurement_id,measured_at") and len(lines) == 1 + 12 * 4 * 3

    # ?asn= keeps the comparison with every other ISP (it used to return no leak at all)
    resp = await client.get("/api/v1/leaks", params={"asn": "31549"}, headers=AUTH)
    narrowed = await resp.json()
    assert narrowed["leaks"] == json.loads(leaks_cli)["leaks"]
    assert narrowed["divergences"] == []
    resp = await client.get("/api/v1/compare", params={"domain": "bbc.com"}, headers=AUTH)
    narrowed = await resp.json()
    assert [(d["asn"], d["kind"]) for d in narrowed["divergences"]] == [(64605, "unfiltered")]
    assert narrowed["leaks"] == [] and len(narrowed["isps"]) == 6


@pytest.mark.parametrize(
    ("path", "error", "named"),
    [
        ("/api/v1/leaks?bucket=soon", "bad_filter", "bucket"),
        ("/api/v1/compare?asn=Shatel", "bad_filter", "asn"),
        ("/api/v1/export?format=xlsx", "bad_format", "format"),
        ("/api/v1/export?format=csv&since=whenever", "bad_filter", "since"),
    ],
)
async def test_bad_query_is_a_400_naming_it(
    config_file: Path, aiohttp_client: AiohttpClient, path: str, error: str, named: str
) -> None:
    """A bad filter or format is a 400 JSON error that names the parameter."""
    client = await aiohttp_client(make_app(load_collector_config(config_file)))
    resp = await client.get(path, headers=AUTH)
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == error and named in body["detail"]


async def test_analyst_endpoints_need_a_token(config_file: Path, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    """Without an analyst token the endpoints answer 401 and show no data."""
    client = await aiohttp_client(make_app(load_collector_config(config_file)))
    for path in ("/api/v1/leaks", "/api/v1/compare", "/api/v1/export?format=csv"):
        resp = await client.get(path)
        assert resp.status == 401
        assert "error" in await resp.json()
