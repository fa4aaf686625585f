"""Progress lines appear on a terminal and never in a pipe or file."""

from __future__ import annotations

import io
import os
import select

from collector.progress import Progress


def _read_all(fd: int) -> str:
    """Everything written to the terminal so far: one read may return only the first write."""
    out = b""
    while select.select([fd], [], [], 0.5)[0]:
        out += os.read(fd, 1000)
    return out.decode()


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
        shown = _read_all(master)
    finally:
        os.close(master)
        os.close(slave)
    assert "read 5 files" in shown
    assert shown.endswith("\r\x1b[2K")
