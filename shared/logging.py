"""structlog set-up, once per process, with a last line of defence for volunteers' privacy.

Code never logs tokens or addresses on purpose. ``redact_addresses`` is the safety net: it
replaces anything shaped like an IPv4 or IPv6 address, and any value under a key that names
a secret, before an event is rendered.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import structlog

_IPV4: Final = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_IPV6: Final = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_SECRET_KEYS: Final = frozenset(
    {"token", "authorization", "password", "secret", "code", "analyst_token", "dsn"}
)


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """The ``logging`` section of the agent's and the collector's configuration."""

    json: bool | None = None  # None: JSON lines unless standard error is a terminal
    level: Literal["debug", "info", "warning", "error"] = "info"


def scrub(text: str) -> str:
    """``text`` with every IPv4 and IPv6 address replaced by ``<addr>``."""
    return _IPV6.sub("<addr>", _IPV4.sub("<addr>", text))


def redact_addresses(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: no address and no secret leaves the process in a log line."""
    for key, value in list(event_dict.items()):
        if key in _SECRET_KEYS:
            event_dict[key] = "<redacted>"
        elif isinstance(value, str):
            event_dict[key] = scrub(value)
        elif isinstance(value, list | tuple):
            event_dict[key] = [scrub(v) if isinstance(v, str) else v for v in value]
    return event_dict


def configure_logging(json: bool | None = None, level: str = "info") -> None:
    """Configure structlog and the standard library's logging for this process.

    ``json=None`` picks JSON lines unless standard error is a terminal.
    """
    if json is None:
        json = not sys.stderr.isatty()
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_addresses,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_STDERR),
        cache_logger_on_first_use=False,
    )
    # aiohttp's access log would print client addresses: it stays off (see collector/app.py),
    # and library warnings go through the same scrubbing formatter.
    handler = logging.StreamHandler(_STDERR)
    handler.setFormatter(_ScrubbingFormatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))


class _CurrentStderr:
    """Whatever ``sys.stderr`` is at the moment of each write, not the stream it was when
    logging was configured: a process (or a test) that swaps or closes standard error
    never has log lines written into a closed file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_STDERR: Any = _CurrentStderr()


class _ScrubbingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))
