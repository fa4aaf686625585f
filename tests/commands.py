"""The ``filterwatch`` command as the tests start it: this interpreter, this checkout's code."""

from __future__ import annotations

import sys
from typing import Final

FILTERWATCH: Final = (sys.executable, "-m", "filterwatch")
