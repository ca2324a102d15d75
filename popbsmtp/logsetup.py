"""Logging for the daemon and the tools.

In the foreground we log to stderr; under systemd (``JOURNAL_STREAM`` set)
without our own timestamps, since the journal adds them.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional, TextIO


def setup(level: str = "info", *, stream: Optional[TextIO] = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        fmt = "%(levelname)s: %(message)s"
    else:
        fmt = "%(asctime)s popbsmtp[%(process)d] %(levelname)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("watchdog").setLevel(logging.WARNING)
