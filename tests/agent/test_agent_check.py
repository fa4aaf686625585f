"""``filterwatch agent check``: the volunteer's "is my set-up right?" before ``agent run``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.state import Credentials, Target, save_credentials, save_fingerprint_doc, save_targets
from filterwatch.cli import main
from shared.blockpages import default_fingerprints

URL = "https://collector.example:8470"


def enrolled(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    save_credentials(state, Credentials("agent-1", "secret-token-value", URL))
    return state


def test_a_good_set_up_is_described(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Counts, the collector's URL and the state directory; exit 0; no token printed."""
    state = enrolled(tmp_path)
    prints = tmp_path / "mine.csv"
    prints.write_text("name,scope,location_found,pattern_type,pattern\nx,isp,body,regexp,a.b\n")
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"collector_url: {URL}\nstate_dir: {state}\nprobes: {{fingerprints: [{prints}]}}\n"
    )
    save_targets(state, [Target("https://a.example/"), Target("https://b.example/")])
    save_fingerprint_doc(state, default_fingerprints().to_json())
    assert main(["agent", "check", "--config", str(config), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["collector_url"] == URL and doc["state_dir"] == str(state)
    assert doc["targets_cached"] == 2
    assert doc["fingerprints"]["from_collector"] == len(default_fingerprints())
    assert doc["fingerprints"]["http"] == default_fingerprints().counts()["http"] + 1
    assert main(["agent", "check", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert URL in text and "2 cached" in text and "secret-token-value" not in text


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("not_enrolled", "not enrolled"),
        ("bad_key", "probes.timeout: unknown key"),
        ("bad_fingerprints", "pattern_type"),
        ("missing_fingerprints", "no such file"),
    ],
)
def test_what_is_wrong_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: str, message: str
) -> None:
    """Each mistake exits 2 with a message naming it."""
    state = tmp_path / "state" if setup == "not_enrolled" else enrolled(tmp_path)
    config = tmp_path / "agent.yaml"
    probes = ""
    if setup == "bad_key":
        probes = "probes: {timeout: 3}\n"
    elif setup == "bad_fingerprints":
        bad = tmp_path / "bad.csv"
        bad.write_text("name,scope,location_found,pattern_type,pattern\nx,isp,body,glob,a*\n")
        probes = f"probes: {{fingerprints: [{bad}]}}\n"
    elif setup == "missing_fingerprints":
        probes = f"probes: {{fingerprints: [{tmp_path / 'nope.csv'}]}}\n"
    config.write_text(f"collector_url: {URL}\nstate_dir: {state}\n{probes}")
    assert main(["agent", "check", "--config", str(config)]) == 2
    assert message in capsys.readouterr().err
