"""Requests from ``popbsmtp add/remove/flush`` to a running daemon.

A request is a small JSON file renamed into ``state_dir/control/``; the
daemon's watcher wakes the core loop, which applies it, saves state and then
deletes the file.  The tool waits (with a deadline) for the file to vanish.
When no daemon holds the state lock, the tool applies the request itself.
Requests left behind (daemon stopped meanwhile) are applied at next start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from typing import Any, Dict, List, Tuple

log = logging.getLogger(__name__)

OPS = ("add", "remove", "flush", "save")


def spool_dir(state_dir: str) -> str:
    return os.path.join(state_dir, "control")


def submit(state_dir: str, request: Dict[str, Any]) -> str:
    directory = spool_dir(state_dir)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".req-", dir=directory)
    with os.fdopen(fd, "w") as handle:
        json.dump(request, handle)
    final = os.path.join(directory, f"req-{time.time_ns():020d}-{os.getpid()}.json")
    os.rename(tmp, final)
    return final


def pending(state_dir: str) -> List[Tuple[str, Dict[str, Any]]]:
    """Queued requests, oldest first; unreadable ones are logged and dropped."""
    directory = spool_dir(state_dir)
    try:
        names = sorted(n for n in os.listdir(directory) if n.startswith("req-"))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd) as handle:
                request = json.load(handle)
            if request.get("op") not in OPS:
                raise ValueError(f"unknown op {request.get('op')!r}")
            found.append((path, request))
        except (OSError, ValueError) as exc:
            log.warning("dropping bad control request %s: %s", path, exc)
            done(path)
    return found


def done(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
