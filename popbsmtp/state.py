"""The grant table and the log read position, saved together atomically.

A snapshot is one JSON file written to a temporary name, fsynced and renamed
over ``state.json``, so a crash leaves either the old or the new snapshot,
never a torn one.  A snapshot that cannot be read is set aside (renamed with
a ``.corrupt-<time>`` suffix) with a warning and the daemon starts empty: the
map is then rebuilt from what the log still says.  The ``lock`` file is held
by the running daemon, so tools know whether to queue a request or act.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import stat
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from popbsmtp.addresses import postfix_key
from popbsmtp.errors import StartupError
from popbsmtp.sources.position import Position

log = logging.getLogger(__name__)

VERSION = 1
Row = Tuple[str, float, str, str]


@dataclass
class Snapshot:
    grants: List[Row] = field(default_factory=list)
    position: Optional[Position] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    saved: Optional[float] = None  # the daemon's clock when written (clock jumps)


def ensure_dir(path: str) -> None:
    """Create ``state_dir`` 0750 and refuse one others can write or a symlink."""
    with contextlib.suppress(FileExistsError):
        os.makedirs(path, mode=0o750)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise StartupError(f"state_dir {path} is not a directory (or is a symlink)")
    if info.st_mode & 0o002 or (info.st_mode & 0o020 and info.st_gid != 0):
        raise StartupError(
            f"state_dir {path} is writable by others (mode {stat.S_IMODE(info.st_mode):o}); "
            f"fix with: chmod go-w {path}"
        )


class StateFile:
    def __init__(self, state_dir: str) -> None:
        self.dir = state_dir
        self.path = os.path.join(state_dir, "state.json")

    def load(self) -> Snapshot:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(self.path, flags)
        except FileNotFoundError:
            return Snapshot()
        except OSError as exc:  # ELOOP: a symlink in state_dir is never followed
            return self._set_aside(exc)
        try:
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    raise ValueError("not a regular file")
                data = json.loads(handle.read())
            return _snapshot(data)
        except (ValueError, KeyError, TypeError, IndexError, OSError) as exc:
            return self._set_aside(exc)

    def _set_aside(self, exc: Exception) -> Snapshot:
        aside = f"{self.path}.corrupt-{int(time.time())}"
        with contextlib.suppress(OSError):
            os.rename(self.path, aside)
        log.warning(
            "state file %s is unreadable (%s); set aside as %s, starting empty",
            self.path,
            exc,
            aside,
        )
        return Snapshot()

    def save(self, snap: Snapshot) -> None:
        """Write atomically; raises OSError (the caller logs and retries)."""
        data = {
            "version": VERSION,
            "saved": time.time() if snap.saved is None else snap.saved,
            "position": snap.position.to_json() if snap.position else None,
            "grants": snap.grants,
            **snap.extra,
        }
        payload = json.dumps(data, separators=(",", ":")).encode()
        fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".tmp", dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.dir)


def _snapshot(data: Dict[str, Any]) -> Snapshot:
    if data.get("version") != VERSION:
        raise ValueError(f"unknown state version {data.get('version')!r}")
    grants = [(str(ip), float(exp), str(prof), str(rule)) for ip, exp, prof, rule in data["grants"]]
    for ip, *_ in grants:
        if postfix_key(ip) != ip:  # InvalidAddress is a ValueError: set the file aside
            raise ValueError(f"{ip!r} is not a client address key")
    position = Position.from_json(data["position"]) if data.get("position") else None
    extra = {k: v for k, v in data.items() if k not in ("version", "saved", "grants", "position")}
    saved = data.get("saved")
    return Snapshot(grants, position, extra, float(saved) if saved is not None else None)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StateLock:
    """An exclusive ``fcntl`` lock on ``state_dir/lock``, held by the daemon."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, "lock")
        self.fd: Optional[int] = None

    def acquire(self, *, wait: float = 0.0) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.fd = fd
                return True
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    os.close(fd)
                    raise
            if time.monotonic() >= deadline:
                os.close(fd)
                return False
            time.sleep(0.05)  # polling another process's lock; nothing to wait on

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
