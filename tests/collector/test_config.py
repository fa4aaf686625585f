"""The collector's configuration: every check in the loader, every error
`<file>: <key>: <problem>`, and what the loader works out once for the code past it."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from collector.config import WebhookFilters, load_collector_config
from filterwatch.cli import main
from shared.errors import ConfigError

SECRET = "0123456789abcdef0123"
HOOK = f"url: 'https://h.example/x', secret: {SECRET}"


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "collector.yaml"
    path.write_text(f"database: {{sqlite_path: {tmp_path / 'c.sqlite3'}}}\n{text}")
    return path


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_collector_config(path)
    return str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "listen: {trusted_proxies: [10.0.0.0/8, proxy]}\n",
            "listen.trusted_proxies: 'proxy' is not a CIDR range",
        ),
        ("listen: {tls_key: k.pem}\n", "listen.tls_cert: goes with tls_key: set both or neither"),
        ("monitor: {bucket: 1h, window: 1h}\n", "monitor.window: must be at least two buckets"),
        (
            "monitor: {bucket: hourly}\n",
            'monitor.bucket: expected a duration like 30s, 5m, 2h or 7d, got "hourly"',
        ),
        ("monitor: {interval_s: 0}\n", "monitor.interval_s: must be positive"),
        ("alerts: {max_age: 0s}\n", "alerts.max_age: must be at least 1s"),
        (
            "alerts: {allow_ranges: [intranet]}\n",
            "alerts.allow_ranges: 'intranet' is not a CIDR range",
        ),
        (
            f"alerts: {{webhooks: [{{{HOOK}, filters: {{kinds: [leak]}}}}]}}\n",
            "alerts.webhooks[0].filters.kinds: 'leak' is not one of lapse, uncorroborated,"
            " unfiltered, lagging, partial",
        ),
        (
            f"alerts: {{webhooks: [{{{HOOK}, filters: {{cc: [IRN]}}}}]}}\n",
            "alerts.webhooks[0].filters.cc: 'IRN' is not a two-letter country code",
        ),
        (
            "alerts: {webhooks: [{url: 'https://h.example/x', secret: short}]}\n",
            "alerts.webhooks[0].secret: use at least 16 characters (e.g. openssl rand -hex 32)",
        ),
        ("database: {retention: 1h}\n", "database.retention: must be at least 1d"),
        (
            "dashboard: {bucket_s: 2d, window_s: 1d}\n",
            "dashboard.bucket_s: must not be larger than window_s",
        ),
        ("dashboard: {poll_s: 0}\n", "dashboard.poll_s: must be positive"),
        ("dashboard: {refresh_s: -1}\n", "dashboard.refresh_s: must not be negative"),
        (
            "dashboard: {login_attempts_per_minute: 0}\n",
            "dashboard.login_attempts_per_minute: must be at least 1",
        ),
    ],
)
def test_a_bad_value_is_named_by_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    """Each value check of the collector's configuration: one line, the file, the key path."""
    if text.startswith("database:"):
        path = tmp_path / "collector.yaml"
        path.write_text(text)
    else:
        path = _yaml(tmp_path, text)
    assert _error(path) == f"{path}: {message}"


def test_a_webhook_url_is_checked_without_being_shown(tmp_path: Path) -> None:
    """A Slack-style hook's URL is a secret: the error names the key, not the URL."""
    path = _yaml(
        tmp_path, f"alerts: {{webhooks: [{{url: 'hooks/T0/secret', secret: {SECRET}}}]}}\n"
    )
    message = _error(path)
    assert (
        message == f"{path}: alerts.webhooks[0].url: must be an http:// or https:// URL with a host"
    )


@pytest.mark.parametrize(
    "key", ["netdb_path", "targets_path", "fingerprints_path", "control.ca_file"]
)
def test_a_missing_file_is_named_when_loading(tmp_path: Path, key: str) -> None:
    """Every file the configuration names must exist when it is loaded."""
    missing = tmp_path / "missing"
    section, _, name = key.rpartition(".")
    text = f"{section}: {{{name}: {missing}}}\n" if section else f"{name}: {missing}\n"
    path = _yaml(tmp_path, text)
    assert _error(path) == f"{path}: {key}: {missing}: no such file"


def test_values_are_worked_out_once_by_the_loader(tmp_path: Path) -> None:
    """Durations as seconds, CIDRs as networks, webhook filters in the findings' case."""
    path = _yaml(
        tmp_path,
        "monitor: {bucket: 10m, window: 2d}\n"
        "alerts: {max_age: 6h, allow_ranges: [127.0.0.0/8], webhooks:"
        f" [{{{HOOK}, filters: {{cc: [ir], domain: [Facebook.COM]}}}}]}}\n"
        "listen: {trusted_proxies: ['::1']}\n"
        "control: {allow_ranges: [10.1.0.0/16]}\n",
    )
    config = load_collector_config(path)
    assert (config.monitor.bucket_s, config.monitor.window_s) == (600.0, 2 * 86400.0)
    assert config.alerts.max_age_s == 6 * 3600.0
    assert config.alerts.allow_networks == (ipaddress.ip_network("127.0.0.0/8"),)
    assert config.control.allow_networks == (ipaddress.ip_network("10.1.0.0/16"),)
    assert config.listen.trusted_networks == (ipaddress.ip_network("::1/128"),)
    assert config.database.retention_s is None
    filters = config.alerts.webhooks[0].filters
    assert (filters.cc, filters.domain) == (("IR",), ("facebook.com",))


def test_filters_built_in_code_are_normalised_too() -> None:
    """The same rules whether the filters come from a file or from code."""
    assert WebhookFilters(cc=("ir",)).cc == ("IR",)


@pytest.mark.parametrize("command", ["serve", "leaks", "events", "analyst-token"])
def test_the_cli_exits_2_with_the_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """Every collector command that reads the configuration: exit 2 and that one line only."""
    path = _yaml(tmp_path, "dashboard: {poll_s: 0}\n")
    assert main(["collector", command, "--config", str(path)]) == 2
    assert capsys.readouterr().err == f"filterwatch: {path}: dashboard.poll_s: must be positive\n"
