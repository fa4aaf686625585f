"""``filterwatch agent install-service``: the unit it writes passes ``systemd-analyze verify``,
and without a systemd user session it says so and exits 2 instead of failing half-way."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.state import Credentials, save_credentials
from tests.commands import FILTERWATCH
from tests.conftest import skip_or_fail_in_ci

ROOT = Path(__file__).resolve().parents[2]


def _filterwatch(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        # An empty runtime directory: no user manager can be reached from here.
        "XDG_RUNTIME_DIR": str(home / "run"),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    (home / "run").mkdir(mode=0o700, exist_ok=True)
    return subprocess.run(
        [*FILTERWATCH, "agent", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=60,
    )


def _verify(unit: Path, *, user: bool, home: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemd-analyze") is None:
        skip_or_fail_in_ci("systemd-analyze is not installed (Debian package systemd)")
    cmd = ["systemd-analyze", *(["--user"] if user else []), "verify", str(unit)]
    env = {**os.environ, "XDG_RUNTIME_DIR": str(home / "run")}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def _unit_from_dry_run(home: Path, *args: str) -> tuple[Path, str]:
    done = _filterwatch(home, "install-service", "--dry-run", *args)
    assert done.returncode == 0, done.stderr
    first, _, text = done.stdout.partition("\n")
    assert first.startswith("# ")
    return Path(first[2:]), text


def test_dry_run_prints_a_user_unit_that_verifies(tmp_path: Path) -> None:
    """The default is a user unit in ~/.config/systemd/user, clean for systemd-analyze."""
    config = tmp_path / "agent.yaml"
    config.write_text("collector_url: https://collector.example.org\n")
    where, text = _unit_from_dry_run(tmp_path, "--config", str(config))
    assert where == tmp_path / ".config" / "systemd" / "user" / "filterwatch-agent.service"
    assert f"agent run --config {config}" in text
    assert "User=" not in text and "DynamicUser" not in text
    assert "NoNewPrivileges=yes" in text and "CapabilityBoundingSet=\n" in text
    assert "WantedBy=default.target" in text
    assert not where.exists()  # --dry-run changes nothing
    unit = tmp_path / "filterwatch-agent.service"
    unit.write_text(text)
    verified = _verify(unit, user=True, home=tmp_path)
    assert verified.returncode == 0, verified.stderr
    assert verified.stderr.strip() == ""  # no unknown key, no bad value


def test_dry_run_system_unit_verifies(tmp_path: Path) -> None:
    """--system: a dynamic unprivileged user, state in /var/lib, clean for systemd-analyze."""
    where, text = _unit_from_dry_run(tmp_path, "--system")
    assert where == Path("/etc/systemd/system/filterwatch-agent.service")
    assert "DynamicUser=yes" in text and "StateDirectory=filterwatch-agent" in text
    assert "--state-dir /var/lib/filterwatch-agent" in text
    assert "ProtectHome=yes" in text and "WantedBy=multi-user.target" in text
    unit = tmp_path / "filterwatch-agent.service"
    unit.write_text(text)
    verified = _verify(unit, user=False, home=tmp_path)
    assert verified.returncode == 0, verified.stderr
    assert verified.stderr.strip() == ""


def test_install_without_a_user_session_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    """No systemd user manager reachable: a clear message, exit 2, no unit left behind."""
    save_credentials(
        tmp_path / ".local" / "share" / "filterwatch-agent",
        Credentials("ag-test", "token-test", "https://collector.example.org"),
    )
    done = _filterwatch(tmp_path, "install-service")
    assert done.returncode == 2, done.stderr
    assert "no systemd user session" in done.stderr or "does not run systemd" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / ".config" / "systemd" / "user" / "filterwatch-agent.service").exists()


def test_install_before_enrolling_says_how_to_enroll(tmp_path: Path) -> None:
    """An agent with no credentials is not installed: exit 2 and the enroll command."""
    done = _filterwatch(tmp_path, "install-service")
    assert done.returncode == 2
    assert "filterwatch agent enroll --collector URL --code CODE" in done.stderr


def test_uninstall_when_nothing_is_installed(tmp_path: Path) -> None:
    """uninstall-service with no unit in place exits 1 and names where it looked."""
    done = _filterwatch(tmp_path, "uninstall-service")
    assert done.returncode == 1
    assert "no agent service installed at" in done.stderr


@pytest.mark.parametrize("quoted", ["dir with space", "100%"])
def test_unit_quotes_paths(tmp_path: Path, quoted: str) -> None:
    """Paths with spaces or % survive systemd's ExecStart parsing."""
    state = tmp_path / quoted
    _, text = _unit_from_dry_run(tmp_path, "--state-dir", str(state))
    unit = tmp_path / "u.service"
    unit.write_text(text)
    verified = _verify(unit, user=True, home=tmp_path)
    assert verified.returncode == 0 and verified.stderr.strip() == "", verified.stderr
    assert "%%" in text if "%" in quoted else "'" in text
