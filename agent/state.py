"""The agent's state directory: credentials, the cached target list, the status file.

Layout (all files belong to the volunteer's own user; nothing needs privileges)::

    credentials.json   agent_id, token, collector_url   (mode 0600: the token is a secret)
    targets.json       the last target list the collector gave, so rounds go on without it
    fingerprints.json  the last blockpage fingerprint set the collector gave (same reason)
    status.json        what `filterwatch agent status` shows besides the spool
    spool.sqlite3      results not yet acknowledged (agent/spool.py)

Every file is replaced atomically (write a temporary file, fsync, rename) so that a crash
leaves either the old or the new version, never half of one. These are small files, but
callers on the event loop still go through a thread.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from shared.errors import FilterwatchError

CREDENTIALS_FILE = "credentials.json"
TARGETS_FILE = "targets.json"
FINGERPRINTS_FILE = "fingerprints.json"
STATUS_FILE = "status.json"
SPOOL_FILE = "spool.sqlite3"
LOCK_FILE = "agent.lock"


class NotEnrolledError(FilterwatchError):
    """This agent is not enrolled: run `filterwatch agent enroll --collector URL --code CODE`."""


class StateError(FilterwatchError):
    """The agent's state directory cannot be used."""


def default_state_dir() -> Path:
    """``$XDG_DATA_HOME/filterwatch-agent``, or ``~/.local/share/filterwatch-agent``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "filterwatch-agent"


def default_config_path() -> Path:
    """``$XDG_CONFIG_HOME/filterwatch-agent/agent.yaml`` (or under ``~/.config``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "filterwatch-agent" / "agent.yaml"


def ensure_state_dir(path: Path) -> Path:
    """Create the state directory, private to this user, if it does not exist."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create the state directory {path}: {exc.strerror}") from None
    return path


class AlreadyRunningError(FilterwatchError):
    """Another agent is already running with this state directory."""


def lock_state_dir(path: Path) -> int:
    """Hold the state directory for this process (two agents would measure everything
    twice); the kernel lets go when the process ends, however it ends. Returns the
    descriptor to keep open."""
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunningError(
            f"another agent is already running with the state directory {path}"
        ) from None
    return fd


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data``: readers see the old or the new file, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not widen or narrow what we asked for
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself must survive a power cut
    finally:
        os.close(dir_fd)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateError(f"{path} cannot be read ({exc}); remove it to start afresh") from None


@dataclass(frozen=True, slots=True)
class Credentials:
    agent_id: str
    token: str
    collector_url: str

    def __repr__(self) -> str:  # keeps the token out of tracebacks and debug output
        return f"Credentials(agent_id={self.agent_id!r}, collector_url={self.collector_url!r})"


def save_credentials(state_dir: Path, creds: Credentials) -> Path:
    path = ensure_state_dir(state_dir) / CREDENTIALS_FILE
    write_atomically(path, json.dumps(asdict(creds)).encode(), mode=0o600)
    return path


def load_credentials(state_dir: Path) -> Credentials:
    path = state_dir / CREDENTIALS_FILE
    doc = _read_json(path)
    if doc is None:
        raise NotEnrolledError()
    try:
        return Credentials(
            agent_id=str(doc["agent_id"]),
            token=str(doc["token"]),
            collector_url=str(doc["collector_url"]),
        )
    except (KeyError, TypeError):
        raise StateError(f"{path} is incomplete; enroll again") from None


@dataclass(frozen=True, slots=True)
class Target:
    url: str


def save_targets(state_dir: Path, targets: list[Target]) -> None:
    doc = {"targets": [t.url for t in targets]}
    write_atomically(state_dir / TARGETS_FILE, json.dumps(doc).encode())


def load_targets(state_dir: Path) -> list[Target] | None:
    """The cached target list, or None when the collector never gave one."""
    doc = _read_json(state_dir / TARGETS_FILE)
    if not isinstance(doc, dict) or not isinstance(doc.get("targets"), list):
        return None
    return [Target(u) for u in doc["targets"] if isinstance(u, str)]


def save_fingerprint_doc(state_dir: Path, doc: Any) -> None:
    """Cache the collector's fingerprint set as it came (GET /api/v1/fingerprints)."""
    write_atomically(state_dir / FINGERPRINTS_FILE, json.dumps(doc).encode())


def load_fingerprint_doc(state_dir: Path) -> Any:
    """The cached fingerprint answer, or None when the collector never gave one."""
    return _read_json(state_dir / FINGERPRINTS_FILE)


@dataclass(frozen=True, slots=True)
class Status:
    """What the running agent last knew about itself. No addresses, no token."""

    pid: int | None = None
    updated_at: float | None = None
    last_round_at: float | None = None
    last_upload_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    uploaded: int = 0
    rejected: int = 0
    network: dict[str, Any] | None = None
    network_checked_at: float | None = None
    clock_skew_s: float | None = None
    clock_confirmed_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def save_status(state_dir: Path, status: Status) -> None:
    write_atomically(state_dir / STATUS_FILE, json.dumps(asdict(status), indent=1).encode())


def load_status(state_dir: Path) -> Status:
    doc = _read_json(state_dir / STATUS_FILE)
    if not isinstance(doc, dict):
        return Status()
    known = set(Status.__dataclass_fields__)
    return Status(**{k: v for k, v in doc.items() if k in known})


class StatusRecorder:
    """The running agent's status in memory, written to ``status.json`` now and then."""

    def __init__(self, state_dir: Path, initial: Status) -> None:
        self._state_dir = state_dir
        self.current = initial
        self._dirty = True

    def update(self, **changes: Any) -> None:
        self.current = replace(self.current, **changes)
        self._dirty = True

    async def save(self, now: float) -> None:
        if not self._dirty:
            return
        self._dirty = False
        self.current = replace(self.current, updated_at=now)
        await asyncio.to_thread(save_status, self._state_dir, self.current)
