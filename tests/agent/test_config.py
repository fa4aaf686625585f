"""The agent's configuration: every check in the loader, every error `<file>: <key>: <problem>`."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_agent_config, load_agent_setup
from filterwatch.cli import main
from shared.errors import ConfigError

URL = "http://127.0.0.1:9"


# Each value check of the agent's configuration: the YAML, and the error after the file name.
BAD_VALUES = [
    ("interval_s: 0\n", "interval_s: must be greater than 0, got 0"),
    (
        "interval_s: 60\njitter_s: 60\n",
        "jitter_s: must be at least 0 and less than interval_s (60), got 60",
    ),
    ("concurrency: 0\n", "concurrency: must be between 1 and 1024, got 0"),
    (
        "concurrency: 4\nper_host_limit: 5\n",
        "per_host_limit: must be between 1 and concurrency (4), got 5",
    ),
    ("probes: {timeout_s: -1}\n", "probes.timeout_s: must be greater than 0, got -1"),
    (
        "upload: {retry_base_s: 10, retry_cap_s: 5}\n",
        "upload.retry_cap_s: must be at least retry_base_s (10), got 5",
    ),
    (
        "upload: {batch_max_results: 0}\n",
        "upload.batch_max_results: must be between 1 and 5000, got 0",
    ),
    (
        "upload: {batch_max_bytes: 10}\n",
        "upload.batch_max_bytes: must be at least 4096, got 10",
    ),
    ("spool: {max_bytes: 1}\n", "spool.max_bytes: must be at least 65536, got 1"),
]


def _agent_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(f"collector_url: {URL}\n{text}")
    return path


@pytest.mark.parametrize(("text", "message"), BAD_VALUES)
def test_a_bad_value_is_named_by_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    """Each value check of the agent's configuration: one line, the file, the key path."""
    path = _agent_yaml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_agent_config(path)
    assert str(info.value) == f"{path}: {message}"


def test_a_collector_url_without_a_host_is_named(tmp_path: Path) -> None:
    """collector_url is checked like every other key."""
    path = tmp_path / "agent.yaml"
    path.write_text("collector_url: 'https://'\n")
    with pytest.raises(ConfigError) as info:
        load_agent_config(path)
    assert str(info.value) == (
        f"{path}: collector_url: must be an http:// or https:// URL with a host, got 'https://'"
    )


@pytest.mark.parametrize("key", ["probes.ca_file", "upload.ca_file"])
def test_a_missing_ca_file_is_named_when_loading(tmp_path: Path, key: str) -> None:
    """A CA file that is not there stops the agent at the loader, not at the first TLS call."""
    section, name = key.split(".")
    missing = tmp_path / "ca.pem"
    path = _agent_yaml(tmp_path, f"{section}: {{{name}: {missing}}}\n")
    with pytest.raises(ConfigError) as info:
        load_agent_config(path)
    assert str(info.value) == f"{path}: {key}: {missing}: no such file"


def test_a_missing_fingerprint_path_is_named_with_its_index(tmp_path: Path) -> None:
    """probes.fingerprints: the missing entry's index is in the key."""
    missing = tmp_path / "nope.csv"
    path = _agent_yaml(tmp_path, f"probes: {{fingerprints: [{tmp_path}, {missing}]}}\n")
    with pytest.raises(ConfigError) as info:
        load_agent_config(path)
    assert str(info.value) == f"{path}: probes.fingerprints[1]: {missing}: no such file"


def test_the_default_file_is_found_and_its_state_dir_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --config: $XDG_CONFIG_HOME/filterwatch-agent/agent.yaml, with its state_dir."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    default = tmp_path / "filterwatch-agent" / "agent.yaml"
    default.parent.mkdir()
    default.write_text(f"collector_url: {URL}\nstate_dir: {tmp_path / 'st'}\n")
    setup = load_agent_setup(None, None)
    assert setup.config_path == default and setup.state_dir == tmp_path / "st"
    assert load_agent_setup(None, tmp_path / "other").state_dir == tmp_path / "other"


@pytest.mark.parametrize("command", ["run", "check", "status"])
def test_the_cli_exits_2_with_the_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """Every agent command that reads the configuration: exit 2 and that one line only."""
    missing = tmp_path / "ca.pem"
    path = _agent_yaml(tmp_path, f"state_dir: {tmp_path / 's'}\nupload: {{ca_file: {missing}}}\n")
    assert main(["agent", command, "--config", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"filterwatch: {path}: upload.ca_file: {missing}: no such file\n"
    )
