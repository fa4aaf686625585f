"""The optional extras and the commands that need them.

``pip install filterwatch`` is the light agent; the collector, exports, ``compare``, the
demo and the lab need ``filterwatch[collector]``, the PostgreSQL store ``[postgres]``. A
command whose extra is missing stops with exit 2 and the ``pip install`` line that fixes
it, before anything imports the missing module.
"""

from __future__ import annotations

import importlib.util
from typing import Final

from shared.errors import FilterwatchError

# What each extra brings that the light agent does not have: the top-level modules.
EXTRA_MODULES: Final[dict[str, tuple[str, ...]]] = {
    "collector": ("prometheus_client", "pyarrow", "trustme", "jinja2", "aiohttp_jinja2"),
    "postgres": ("asyncpg",),
}

# Who needs which extra, for the message ("the collector needs: ...").
COMMAND_EXTRAS: Final[dict[str, tuple[str, str]]] = {
    "collector": ("the collector", "collector"),
    "compare": ("compare", "collector"),
    "demo": ("the demo", "collector"),
    "lab": ("the lab", "collector"),
    "import": ("import", "collector"),
}


class MissingExtraError(FilterwatchError):
    """A command needs an optional extra that is not installed."""

    def __init__(self, who: str, extra: str, missing: list[str]) -> None:
        self.who = who
        self.extra = extra
        self.missing = missing
        super().__init__(
            f"{who} needs: pip install 'filterwatch[{extra}]' (missing: {', '.join(missing)})"
        )


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here."""
    return [m for m in EXTRA_MODULES[extra] if importlib.util.find_spec(m) is None]


def require_extra(who: str, extra: str) -> None:
    """Raise MissingExtraError unless every module of ``extra`` is installed."""
    missing = missing_modules(extra)
    if missing:
        raise MissingExtraError(who, extra, missing)


def extra_of_module(name: str | None) -> str | None:
    """The extra that provides the (top-level of the) module ``name``, if any."""
    top = (name or "").split(".")[0]
    for extra, modules in EXTRA_MODULES.items():
        if top in modules:
            return extra
    return None
