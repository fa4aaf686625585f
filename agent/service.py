"""``filterwatch agent install-service`` and ``uninstall-service``: the agent as a systemd
service that just runs.

By default a *user* unit (``~/.config/systemd/user/filterwatch-agent.service``), managed
with ``systemctl --user``: no root at any step, the agent runs as the volunteer who
enrolled it, with the credentials and spool where ``enroll`` put them. ``--system`` writes
``/etc/systemd/system/filterwatch-agent.service`` (root only) running as a dynamic
unprivileged user with its state in ``/var/lib/filterwatch-agent``.

Both units are hardened: no new privileges, no capabilities, a read-only view of the system
with write access to the state directory alone, only the address families the probes use.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agent.state import CREDENTIALS_FILE, default_config_path, default_state_dir

UNIT_NAME: Final = "filterwatch-agent.service"
SYSTEM_UNIT_DIR: Final = Path("/etc/systemd/system")
SYSTEM_STATE_DIR: Final = Path("/var/lib/filterwatch-agent")


class ServiceError(Exception):
    """The service cannot be installed as asked; the message says what to do."""


@dataclass(frozen=True, slots=True)
class ServicePlan:
    system: bool
    unit_path: Path
    state_dir: Path
    config: Path | None
    text: str


def user_unit_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def agent_command() -> list[str]:
    """How this installation starts ``filterwatch``: its console script, else ``python -m``."""
    script = Path(sys.executable).parent / "filterwatch"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script.absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "filterwatch"]


_HARDENING: Final = """\
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
UMask=0077
MemoryMax=128M
"""


def _quote(arg: str) -> str:
    # systemd splits ExecStart like a shell (without expansion); % starts a specifier.
    return shlex.quote(arg).replace("%", "%%")


def render_unit(*, system: bool, command: list[str], config: Path | None, state_dir: Path) -> str:
    """The unit's text."""
    args = [*command, "agent", "run"]
    if config is not None:
        args += ["--config", str(config)]
    args += ["--state-dir", str(state_dir)]
    exec_start = " ".join(_quote(a) for a in args)
    lines = [
        "# filterwatch agent, written by `filterwatch agent install-service"
        + (" --system`." if system else "`.")
        + " Remove with `filterwatch agent uninstall-service"
        + (" --system`." if system else "`."),
        "[Unit]",
        "Description=filterwatch censorship measurement agent",
        "Documentation=https://github.com/filterwatch/filterwatch",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=exec",
        f"ExecStart={exec_start}",
        "Restart=always",
        "RestartSec=10",
        "# The agent finishes or abandons in-flight measurements within its own bound.",
        "TimeoutStopSec=30",
        "# Hardening: the agent needs outbound sockets and its state directory, nothing else.",
    ]
    if system:
        lines += [
            "DynamicUser=yes",
            "StateDirectory=filterwatch-agent",
            "StateDirectoryMode=0700",
            "Environment=XDG_DATA_HOME=/var/lib",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "PrivateDevices=yes",
            "ProtectKernelTunables=yes",
            "ProtectKernelModules=yes",
            "ProtectKernelLogs=yes",
            "ProtectControlGroups=yes",
            "ProtectClock=yes",
            "ProtectHostname=yes",
        ]
    else:
        lines += [
            # A user manager can only sandbox what its user may see anyway; these keep the
            # agent to its own state directory within the volunteer's home.
            "ProtectSystem=strict",
            "ProtectHome=read-only",
            f"ReadWritePaths={_quote(str(state_dir))}",
            "PrivateTmp=yes",
        ]
    lines.append(_HARDENING.rstrip("\n"))
    lines += ["", "[Install]", "WantedBy=" + ("multi-user.target" if system else "default.target")]
    return "\n".join(lines) + "\n"


def plan_service(args: argparse.Namespace) -> ServicePlan:
    """Where the unit goes and what it says, from the command's arguments."""
    system = bool(args.system)
    config: Path | None = args.config
    if config is None and not system and default_config_path().exists():
        config = default_config_path()
    if config is not None:
        config = config.expanduser().absolute()
    if system:
        state_dir = args.state_dir or SYSTEM_STATE_DIR
        unit_path = SYSTEM_UNIT_DIR / UNIT_NAME
    else:
        state_dir = args.state_dir or _configured_state_dir(config) or default_state_dir()
        unit_path = user_unit_dir() / UNIT_NAME
    state_dir = state_dir.expanduser().absolute()
    command = agent_command()
    text = render_unit(system=system, command=command, config=config, state_dir=state_dir)
    return ServicePlan(system, unit_path, state_dir, config, text)


def _configured_state_dir(config: Path | None) -> Path | None:
    if config is None or not config.exists():
        return None
    from agent.config import load_agent_config

    return load_agent_config(config).state_dir


def _systemctl(system: bool, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = ["systemctl", *([] if system else ["--user"]), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def check_systemd(system: bool) -> None:
    """Raise ServiceError unless a systemd manager of the right kind answers here."""
    if shutil.which("systemctl") is None:
        raise ServiceError(
            "systemctl not found: this machine does not run systemd. Start "
            "`filterwatch agent run` from your init system instead (--dry-run shows the unit)."
        )
    if system:
        if os.geteuid() != 0:
            raise ServiceError(
                "--system needs root: run it with sudo, or install a user unit (the default, "
                "no root)"
            )
        probe = _systemctl(True, "show-environment")
        if probe.returncode != 0:
            raise ServiceError(
                "systemd is not running as this machine's init (systemctl: "
                f"{probe.stderr.strip() or 'no answer'})"
            )
        return
    probe = _systemctl(False, "show-environment")
    if probe.returncode != 0:
        raise ServiceError(
            "no systemd user session here (systemctl --user: "
            f"{probe.stderr.strip() or 'no answer'}). Log in to this machine as this user "
            "(a desktop or ssh session, not su or sudo), or have root run "
            f"`loginctl enable-linger {_user()}`, then run this again; "
            "--dry-run prints the unit without installing it."
        )


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _lingering() -> bool:
    done = subprocess.run(
        ["loginctl", "show-user", _user(), "--property=Linger", "--value"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout.strip() == "yes"


def install(args: argparse.Namespace) -> int:
    plan = plan_service(args)
    if args.dry_run:
        print(f"# {plan.unit_path}")
        print(plan.text, end="")
        return 0
    if plan.system and any(part in ("home", "root") for part in Path(sys.executable).parts[1:2]):
        raise ServiceError(
            f"the system service cannot run filterwatch from {sys.executable} (the unit hides "
            "/home and /root): install filterwatch system-wide, e.g. "
            "`python3 -m venv /opt/filterwatch && /opt/filterwatch/bin/pip install filterwatch`"
        )
    if not (plan.state_dir / CREDENTIALS_FILE).exists():
        raise ServiceError(
            f"this agent is not enrolled in {plan.state_dir}: run `filterwatch agent enroll "
            f"--collector URL --code CODE --state-dir {plan.state_dir}` first"
        )
    check_systemd(plan.system)
    plan.unit_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = plan.unit_path.with_suffix(".tmp")
    tmp.write_text(plan.text)
    tmp.chmod(0o644)
    os.replace(tmp, plan.unit_path)
    for step in (("daemon-reload",), ("enable", UNIT_NAME), ("restart", UNIT_NAME)):
        done = _systemctl(plan.system, *step)
        if done.returncode != 0:
            print(
                f"filterwatch: systemctl {' '.join(step)} failed: {done.stderr.strip()}",
                file=sys.stderr,
            )
            return 1
    scope = "" if plan.system else " --user"
    print(f"installed {plan.unit_path}; the agent is running (systemctl{scope} status {UNIT_NAME})")
    if not plan.system and not _lingering():
        print(
            "note: without lingering, systemd stops your user services when you log out and "
            f"starts them at your next login. To measure around the clock: "
            f"`sudo loginctl enable-linger {_user()}` (once)."
        )
    return 0


def uninstall(args: argparse.Namespace) -> int:
    system = bool(args.system)
    unit_path = (SYSTEM_UNIT_DIR if system else user_unit_dir()) / UNIT_NAME
    if not unit_path.exists():
        print(f"filterwatch: no agent service installed at {unit_path}", file=sys.stderr)
        return 1
    check_systemd(system)
    _systemctl(system, "disable", "--now", UNIT_NAME)
    unit_path.unlink()
    _systemctl(system, "daemon-reload")
    print(f"removed {unit_path}; the agent's state directory is kept")
    return 0
