"""The strict config loader, as the collector's configuration uses it."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.config import CollectorConfig, load_collector_config
from shared.config import load_config, parse_duration
from shared.errors import ConfigError


def test_defaults_without_a_file() -> None:
    """No file gives SQLite in the working directory on 127.0.0.1:8470."""
    config = load_collector_config(None)
    assert (config.listen.host, config.listen.port) == ("127.0.0.1", 8470)
    assert str(config.database.sqlite_path) == "filterwatch.sqlite3"
    assert config.limits.max_body_bytes == 8 * 1024 * 1024


def test_full_file_is_read_into_frozen_objects(tmp_path: Path) -> None:
    """Every documented key is read, durations included."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "listen: {host: 0.0.0.0, port: 9000}\n"
        "database: {sqlite_path: /tmp/x.sqlite3, postgres_dsn: null}\n"
        "netdb_path: ip2asn.tsv.gz\ntargets_path: targets.yaml\n"
        "analyst_tokens: [abc]\n"
        "limits: {max_body_bytes: 1048576, max_inflight_batches: 2}\n"
        "control: {allow_ranges: [10.0.0.0/8], resolver: '10.0.0.53:53', ca_file: ca.pem,"
        " timeout_s: 5s}\n"
        "logging: {json: true, level: debug}\n"
    )
    config = load_config(CollectorConfig, path)
    assert config.listen.port == 9000
    assert config.analyst_tokens == ("abc",)
    assert config.control.allow_ranges == ("10.0.0.0/8",) and config.control.timeout_s == 5.0
    assert config.logging.json is True
    with pytest.raises(AttributeError):
        config.listen.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("listen: {port: eighty}\n", "listen.port", "expected a whole number"),
        ("listen: {port: 70000}\n", "listen.port", "not in 0..65535"),
        ("control: {timeout_s: soon}\n", "control.timeout_s", "not a duration"),
        ("control: {allow_ranges: [nonsense]}\n", "control.allow_ranges", "not a CIDR range"),
        ("control: {resolver: not-an-address}\n", "control.resolver", "expected an IP address"),
        ("control: {allow_ports: [0]}\n", "control.allow_ports", "not a TCP port"),
        ("limits: {body_timeout_s: 0}\n", "limits.body_timeout_s", "more than 0"),
        ("database: {postgres_dsn: 'db.example:5432'}\n", "database.postgres_dsn", "postgresql://"),
        ("logging: {level: loud}\n", "logging.level", "expected one of"),
        ("limits: {max_inflight_batches: 0}\n", "limits.max_inflight_batches", "at least 1"),
        ("databse: {}\n", "databse", "unknown key"),
        ("- a list\n", "", "expected a mapping"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    """A bad key or value is a ConfigError with the file, the key path and the problem."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_collector_config(path)
    assert info.value.path == str(path)
    assert info.value.key == key
    assert problem in info.value.problem


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    """A missing file and broken YAML are reported with the file name."""
    with pytest.raises(ConfigError, match="no such file"):
        load_collector_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: {host: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_collector_config(bad)


def test_durations() -> None:
    """Durations take the usual suffixes."""
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("90") == 90
    with pytest.raises(ValueError):
        parse_duration("7 days")
