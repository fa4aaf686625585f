"""``filterwatch agent probe URL`` (stub until built)."""

from __future__ import annotations

import argparse

from filterwatch.cli import not_built


def run_probe(args: argparse.Namespace) -> int:
    return not_built("agent probe")
