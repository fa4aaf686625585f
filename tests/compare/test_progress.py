"""Progress lines appear on a terminal and never in a pipe or file."""

from __future__ import annotations

import io
import os

from collector.progress import Progress


def test_progress_is_silent_when_not_a_terminal() -> None:
    """Redirected stderr gets no progress lines."""
    stream = io.StringIO()
    progress = Progress(stream)
    progress.update("read 5 files", force=True)
    progress.done()
    assert stream.getvalue() == ""


def test_progress_rewrites_one_line_on_a_terminal() -> None:
    """On a terminal the status line is drawn, then cleared when done."""
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=False) as stream:
            progress = Progress(stream)
            progress.update("read 5 files", force=True)
            progress.done()
        shown = os.read(master, 1000).decode()
    finally:
        os.close(master)
        os.close(slave)
    assert "read 5 files" in shown
    assert shown.endswith("\r\x1b[2K")
