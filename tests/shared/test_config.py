"""The strict config loader: as the collector's configuration uses it, and its own rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.config import load_agent_config
from collector.config import CollectorConfig, load_collector_config
from shared.config import (
    EXISTING,
    EXISTING_FILE,
    derive,
    derived,
    load_config,
    parse_duration,
    require,
)
from shared.errors import ConfigError, FilterwatchError


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
        ("control: {timeout_s: soon}\n", "control.timeout_s", 'expected a number, got "soon"'),
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


@dataclass(frozen=True, slots=True)
class _Inner:
    size: int = 1
    files: tuple[Path, ...] = field(default=(), metadata=EXISTING)
    ca_file: Path | None = field(default=None, metadata=EXISTING_FILE)
    twice: int = derived()

    def __post_init__(self) -> None:
        require(self.size > 0, "size", f"must be greater than 0, got {self.size}")
        derive(self, "twice", 2 * self.size)


@dataclass(frozen=True, slots=True)
class _Outer:
    inner: _Inner = field(default_factory=_Inner)
    items: tuple[_Inner, ...] = ()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    return path


def test_a_dataclass_check_is_reported_at_its_key_in_the_one_shape(tmp_path: Path) -> None:
    """A check in __post_init__ names its field; the loader adds the file and the path."""
    path = _write(tmp_path, "items: [{size: 2}, {size: 0}]\n")
    with pytest.raises(ConfigError) as info:
        load_config(_Outer, path)
    assert str(info.value) == f"{path}: items[1].size: must be greater than 0, got 0"
    assert (info.value.key, info.value.problem) == (
        "items[1].size",
        "must be greater than 0, got 0",
    )


def test_the_design_example_message(tmp_path: Path) -> None:
    """The message of style.md: the file, the key path, what was expected and what it got."""
    path = tmp_path / "agent.yaml"
    path.write_text("collector_url: http://127.0.0.1:9\nprobes: {timeout_s: ten}\n")
    with pytest.raises(ConfigError) as info:
        load_agent_config(path)
    assert str(info.value).startswith(f'{path}: probes.timeout_s: expected a number, got "ten"')


def test_errors_of_the_whole_file_name_only_the_file(tmp_path: Path) -> None:
    """No key when the file itself is at fault: `<file>: <problem>`."""
    missing = tmp_path / "none.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(_Outer, missing)
    assert str(info.value) == f"{missing}: no such file"


def test_derived_fields_are_worked_out_and_are_not_keys(tmp_path: Path) -> None:
    """A field the dataclass works out is set by the loader and refused in the file."""
    assert load_config(_Outer, _write(tmp_path, "inner: {size: 3}\n")).inner.twice == 6
    with pytest.raises(ConfigError) as info:
        load_config(_Outer, _write(tmp_path, "inner: {twice: 3}\n"))
    assert info.value.key == "inner.twice" and "unknown key" in info.value.problem


def test_paths_that_must_exist_are_checked_only_when_asked(tmp_path: Path) -> None:
    """check_files: a missing path is named by key (and index); without it the file loads."""
    text = f"inner: {{files: [{tmp_path}, {tmp_path / 'nope'}]}}\n"
    assert load_config(_Outer, _write(tmp_path, text)).inner.files[1] == tmp_path / "nope"
    with pytest.raises(ConfigError) as info:
        load_config(_Outer, _write(tmp_path, text), check_files=True)
    assert str(info.value) == (
        f"{tmp_path / 'x.yaml'}: inner.files[1]: {tmp_path / 'nope'}: no such file"
    )


def test_a_file_path_may_not_be_a_directory(tmp_path: Path) -> None:
    """EXISTING_FILE: a directory where a file is needed is refused like a missing file."""
    path = _write(tmp_path, f"inner: {{ca_file: {tmp_path}}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(_Outer, path, check_files=True)
    assert str(info.value) == f"{path}: inner.ca_file: {tmp_path}: no such file"


def test_built_directly_a_bad_value_raises_the_same_error() -> None:
    """A dataclass built in code raises ConfigError naming the field (no file)."""
    with pytest.raises(ConfigError) as info:
        _Inner(size=0)
    assert str(info.value) == "size: must be greater than 0, got 0"
    assert isinstance(info.value, FilterwatchError)
