"""Requests from ``popbsmtp add/remove/flush`` to a running daemon.

A request is a small JSON file renamed into ``state_dir/control/``; the
daemon's watcher wakes the core loop, which applies it, saves state and then
deletes the file.  The tool waits (with a deadline) for the file to vanish.
When no daemon holds the state lock, the tool applies the request itself.
Requests left behind (daemon stopped meanwhile) are applied at next start.
A request that cannot be applied (too big, too deeply nested, not ours, a
bad address or length) is set aside as ``bad-req-…`` with a warning, never
retried: the tool sees that name and says the request was refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
import time
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

if TYPE_CHECKING:
    from popbsmtp.grants import GrantTable

from popbsmtp.config.values import MAX_DURATION
from popbsmtp.errors import SetupError
from popbsmtp.parse.addresses import postfix_key

log = logging.getLogger(__name__)

OPS = ("add", "remove", "flush", "save")
MANUAL = "manual"  # the profile name of grants made by `popbsmtp add`
MAX_REQUEST = 4096  # bytes; a real request is under 100
BAD = "bad-"  # prefix of a request set aside


def spool_dir(state_dir: str) -> str:
    return os.path.join(state_dir, "control")


def check_spool(state_dir: str) -> None:
    """Refuse a spool others could drop requests into (checked at start-up).

    A request can add any address, so only the daemon's user (and root) may
    write there: the directory must be ours, not a symlink, mode 0700.
    """
    directory = spool_dir(state_dir)
    info = os.lstat(directory)
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise SetupError(f"control spool {directory} is not a directory (or is a symlink)")
    if info.st_uid != os.geteuid() or mode & 0o077:
        raise SetupError(
            f"control spool {directory} must be owned by uid {os.geteuid()} with mode 0700 "
            f"(it is uid {info.st_uid}, mode {mode:04o}); fix with: "
            f"chown {os.geteuid()} {directory} && chmod 0700 {directory}"
        )


def submit(state_dir: str, request: Dict[str, Any]) -> str:
    directory = spool_dir(state_dir)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".req-", dir=directory)
    with os.fdopen(fd, "w") as handle:
        json.dump(request, handle)
    final = os.path.join(directory, f"req-{time.time_ns():020d}-{os.getpid()}.json")
    os.rename(tmp, final)
    return final


def rejected(path: str) -> str:
    """Where a request queued as ``path`` is set aside when it is refused."""
    directory, name = os.path.split(path)
    return os.path.join(directory, BAD + name)


def pending(state_dir: str) -> List[Tuple[str, Dict[str, Any]]]:
    """Queued requests, oldest first; bad ones are logged and set aside."""
    directory = spool_dir(state_dir)
    try:
        names = sorted(n for n in os.listdir(directory) if n.startswith("req-"))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        path = os.path.join(directory, name)
        try:
            found.append((path, _read(path)))
        except (OSError, ValueError, RecursionError) as exc:
            log.warning("setting aside bad control request %s: %s", path, exc)
            set_aside(path)
    return found


def _read(path: str) -> Any:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        _check_owner(os.fstat(fd))
        data = handle.read(MAX_REQUEST + 1)
    if len(data) > MAX_REQUEST:
        raise ValueError(f"larger than {MAX_REQUEST} bytes")
    if data.count(b"[") + data.count(b"{") > 8:  # a request is one flat object
        raise ValueError("nested too deeply")
    request = json.loads(data)
    check_request(request)
    return request


def set_aside(path: str) -> None:
    """Rename a refused request out of the queue (never retried), or remove it."""
    try:
        os.rename(path, rejected(path))
    except OSError:
        done(path)


def check_request(request: Any) -> None:
    """Defence in depth: the CLI already normalised the address."""
    if not isinstance(request, dict) or request.get("op") not in OPS:
        op = request.get("op") if isinstance(request, dict) else request
        raise ValueError(f"unknown op {op!r}")
    if request["op"] in ("add", "remove"):
        ip = request.get("ip")
        if not isinstance(ip, str) or postfix_key(ip) != ip:
            raise ValueError(f"{ip!r} is not a normalised client address")
    grace = request.get("grace")
    if grace is not None and (
        isinstance(grace, bool)
        or not isinstance(grace, (int, float))
        or not 0 <= grace <= MAX_DURATION  # also refuses NaN and Infinity, which json accepts
    ):
        raise ValueError(f"grace {grace!r} is not a number of seconds up to 30 days")


def _check_owner(info: os.stat_result) -> None:
    """Only the daemon's own user or root may ask it for anything."""
    if not stat.S_ISREG(info.st_mode):
        raise ValueError("not a regular file")
    if info.st_uid not in (os.geteuid(), 0):
        raise ValueError(f"owned by uid {info.st_uid}, not by the daemon's uid {os.geteuid()}")


def done(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def apply_request(table: GrantTable, request: dict, now: float, grace: float) -> None:
    """Apply one add/remove/flush request to the table (daemon or offline tool)."""
    op = request["op"]
    if op == "add":
        expires = now + float(request.get("grace") or grace)
        table.remove(request["ip"])
        table.grant(request["ip"], expires, MANUAL, "add")
        log.info("added %s by request until %s", request["ip"], time.ctime(expires))
    elif op == "remove":
        if table.remove(request["ip"]):
            log.info("removed %s by request", request["ip"])
    elif op == "flush":
        log.info("flushed %d clients by request", table.clear())
    # "save" only asks for a fresh snapshot (popbsmtp list), which every request gets
