"""deploy/fleet and deploy/systemd as shipped: the collector configuration loads, HAProxy
accepts its configuration, and systemd-analyze finds nothing wrong with the units."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from collector.config import CollectorConfig
from shared.config import load_config
from tests.conftest import skip_or_fail_in_ci

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_fleet_collector_config_loads() -> None:
    """deploy/fleet/collector.yaml: PostgreSQL, the proxy trusted, retention set."""
    config = load_config(CollectorConfig, DEPLOY / "fleet" / "collector.yaml")
    assert config.database.postgres_dsn
    assert config.listen.trusted_proxies == ("127.0.0.1/32",)
    assert config.database.retention_s == 400 * 86400


def test_haproxy_accepts_the_fleet_config() -> None:
    """`haproxy -c` on deploy/fleet/haproxy.cfg."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).exists():
        skip_or_fail_in_ci("haproxy is not installed (Debian package haproxy; scripts/setup)")
    done = subprocess.run(
        [binary, "-c", "-f", str(DEPLOY / "fleet" / "haproxy.cfg")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[WARNING]" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    "unit",
    [
        "fleet/filterwatch-collector@8471.service",
        "fleet/filterwatch-fleet.target",
        "systemd/filterwatch-collector.service",
    ],
)
def test_systemd_units_verify(tmp_path: Path, unit: str) -> None:
    """systemd-analyze verify: no unknown key, no bad value (ExecStart pointed at /bin/true)."""
    if shutil.which("systemd-analyze") is None:
        skip_or_fail_in_ci("systemd-analyze is not installed (Debian package systemd)")
    source = DEPLOY / unit.replace("@8471", "@")
    name = Path(unit).name
    text = source.read_text()
    text = text.replace("/opt/filterwatch/bin/filterwatch", "/bin/true")
    text = text.replace("/usr/local/bin/filterwatch", "/bin/true")
    (tmp_path / name).write_text(text)
    if name.endswith(".service") and "fleet" in unit:
        (tmp_path / "filterwatch-fleet.target").write_text(
            (DEPLOY / "fleet" / "filterwatch-fleet.target").read_text()
        )
    done = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
    )
    assert done.returncode == 0, done.stderr
    problems = [ln for ln in done.stderr.splitlines() if name.split("@")[0] in ln]
    assert problems == [], done.stderr
