"""The grant table and the log read position, saved together atomically.

A snapshot is one JSON file written to a temporary name, fsynced and renamed
over ``state.json``, so a crash leaves either the old or the new snapshot,
never a torn one.  A snapshot that cannot be read is set aside (renamed with
a ``.corrupt-<time>`` suffix) with a warning and the daemon starts empty: the
map is then rebuilt from what the log still says.  The ``lock`` file is held
by the running daemon, so tools know whether to queue a request or act.

Big tables: the grants are written a chunk at a time from an iterator and
read back one row at a time into columns (:class:`Rows`), so neither saving
nor loading 1,000,000 grants ever holds the whole document as Python lists
and tuples.  The format is unchanged (version 1, one JSON object, grants as
``[ip, expires, profile, rule]`` rows, keys in any order), so every snapshot
written before reads as it did.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import logging
import math
import os
import re
import stat
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from popbsmtp.errors import StartupError
from popbsmtp.maps._files import owner_problem, trusted_uids
from popbsmtp.parse.addresses import postfix_key
from popbsmtp.sources.journal import JournalCursor
from popbsmtp.sources.position import Position

log = logging.getLogger(__name__)

VERSION = 1
SAVE_CHUNK = 4096  # grants serialised per write
_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace
_STR = r'"([^"\\\x00-\x1f]*)"'  # a JSON string without escapes
_ROW = re.compile(
    rf"\[[ \t\n\r]*{_STR}[ \t\n\r]*,[ \t\n\r]*(-?[0-9][0-9.eE+-]*)[ \t\n\r]*,"
    rf"[ \t\n\r]*{_STR}[ \t\n\r]*,[ \t\n\r]*{_STR}[ \t\n\r]*\][ \t\n\r]*([,\]]?)[ \t\n\r]*"
)
Row = Tuple[str, float, str, str]


@dataclass
class Snapshot:
    # Loaded: a list.  To save: any iterable, e.g. GrantTable.iter_rows(), so a
    # big table is never copied whole.
    grants: Iterable[Row] = field(default_factory=list)
    position: Optional[Union[Position, JournalCursor]] = None  # a file's, or the journal's
    extra: Dict[str, Any] = field(default_factory=dict)
    saved: Optional[float] = None  # the daemon's clock when written (clock jumps)


def ensure_dir(path: str) -> None:
    """Create ``state_dir`` 0700 and refuse one others can write or own, or a symlink.

    Its grants are loaded as they are: whoever owns the directory could put
    any address in ``state.json``.
    """
    with contextlib.suppress(FileExistsError):
        os.makedirs(path, mode=0o700)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise StartupError(f"state_dir {path} is not a directory (or is a symlink)")
    if info.st_mode & 0o002 or (info.st_mode & 0o020 and info.st_gid != 0):
        raise StartupError(
            f"state_dir {path} is writable by others (mode {stat.S_IMODE(info.st_mode):o}); "
            f"fix with: chmod go-w {path}"
        )
    problem = owner_problem(path)
    if problem is not None:
        raise StartupError(f"state_dir {path}: {problem}; fix with: chown root {path}")


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
                info = os.fstat(handle.fileno())
                if not stat.S_ISREG(info.st_mode):
                    raise ValueError("not a regular file")
                if info.st_uid not in trusted_uids():
                    raise ValueError(f"owned by uid {info.st_uid}, not root or the daemon's user")
                return _snapshot(handle.read().decode("utf-8"))
        # RecursionError: nesting no snapshot has (json recurses per level);
        # OverflowError: a number no float holds
        except (
            ValueError,
            KeyError,
            TypeError,
            IndexError,
            OSError,
            RecursionError,
            OverflowError,
        ) as exc:
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
        fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".tmp", dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as handle:
                _write(handle, snap)
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.dir)


def _write(handle: BinaryIO, snap: Snapshot) -> None:
    """The snapshot as one JSON object, its grants streamed a chunk at a time.

    The same document ``json.dumps`` would make (grants last), without ever
    holding it, or a list of every row, in memory: at 1,000,000 grants those
    were ~200 MB on top of the table.
    """
    head = {
        **snap.extra,
        "version": VERSION,
        "saved": time.time() if snap.saved is None else snap.saved,
        "position": snap.position.to_json() if snap.position else None,
    }
    handle.write(json.dumps(head, separators=(",", ":"))[:-1].encode() + b',"grants":[')
    rows = iter(snap.grants)
    sep = b""
    while True:
        chunk = list(itertools.islice(rows, SAVE_CHUNK))
        if not chunk:
            break
        handle.write(sep + json.dumps(chunk, separators=(",", ":"))[1:-1].encode())
        sep = b","
    handle.write(b"]}")


class Rows:
    """Loaded grants, kept as columns: no list and no tuple per grant.

    The address strings are the ones the grant table then keys on, so a
    restart with 1,000,000 grants holds about 10 bytes per grant besides what
    the table keeps anyway (``json.loads`` of the file took ~300 bytes each).
    Iterating yields (ip, expires, profile, rule) rows, again on every pass.
    """

    def __init__(self) -> None:
        self._ips: List[str] = []
        self._expires = array("d")
        self._rule_of = array("I")
        self._rules: List[Tuple[str, str]] = []
        self._rule_ids: Dict[Tuple[str, str], int] = {}

    def add(self, ip: str, expires: float, profile: str, rule: str) -> None:
        found = self._rule_ids.get((profile, rule))
        if found is None:
            found = self._rule_ids[(profile, rule)] = len(self._rules)
            self._rules.append((profile, rule))
        self._ips.append(ip)
        self._expires.append(expires)
        self._rule_of.append(found)

    def __len__(self) -> int:
        return len(self._ips)

    def __iter__(self) -> Iterator[Row]:
        rules = self._rules
        for ip, expires, found in zip(self._ips, self._expires, self._rule_of):
            yield (ip, expires, *rules[found])


def _snapshot(text: str) -> Snapshot:
    """Parse a snapshot document, its grants one row at a time (see :class:`Rows`)."""
    fields: Dict[str, Any] = {}
    rows: Optional[Rows] = None
    pos = _skip(text, 0)
    if not text.startswith("{", pos):
        raise ValueError("not a JSON object")
    pos = _skip(text, pos + 1)
    while not text.startswith("}", pos):
        key, pos = _DECODER.raw_decode(text, pos)
        pos = _skip(text, pos)
        if not isinstance(key, str) or not text.startswith(":", pos):
            raise ValueError(f"malformed object at character {pos}")
        pos = _skip(text, pos + 1)
        if key == "grants" and rows is None:
            rows = Rows()
            pos = _grants(text, pos, rows)
        else:
            fields[key], pos = _DECODER.raw_decode(text, pos)
        pos = _skip(text, pos)
        if text.startswith(",", pos):
            pos = _skip(text, pos + 1)
        elif not text.startswith("}", pos):
            raise ValueError(f"expected ',' or '}}' at character {pos}")
    if _skip(text, pos + 1) != len(text):
        raise ValueError(f"extra data after the object at character {pos + 1}")
    if fields.get("version") != VERSION:
        raise ValueError(f"unknown state version {fields.get('version')!r}")
    if rows is None or "grants" in fields:  # none, or twice
        raise KeyError("grants")
    position = _position(fields["position"]) if fields.get("position") else None
    extra = {k: v for k, v in fields.items() if k not in ("version", "saved", "position")}
    saved = fields.get("saved")
    if saved is not None and (isinstance(saved, bool) or not math.isfinite(float(saved))):
        raise ValueError(f"saved is not a time ({saved!r})")  # it shifts manual grants
    return Snapshot(rows, position, extra, float(saved) if saved is not None else None)


def _position(data: Any) -> Union[Position, JournalCursor]:
    if isinstance(data, dict) and "journal_cursor" in data:
        return JournalCursor.from_json(data)
    return Position.from_json(data)


def _grants(text: str, pos: int, rows: Rows) -> int:
    """Read the grants array starting at ``pos`` into ``rows``; return where it ends."""
    if not text.startswith("[", pos):
        raise ValueError(f"grants is not a list (character {pos})")
    pos = _skip(text, pos + 1)
    if text.startswith("]", pos):
        return pos + 1
    while True:
        found = _ROW.match(text, pos)
        if found is not None:  # the shape save() writes: a regex is 3x a full decode
            ip, exp, prof, rule, sep = found.groups()
            pos = found.end()
        else:
            (ip, exp, prof, rule), pos = _DECODER.raw_decode(text, pos)
            pos = _skip(text, pos)
            sep = text[pos : pos + 1]
            pos = _skip(text, pos + 1)
        ip, expires = str(ip), float(exp)
        if not math.isfinite(expires):
            raise ValueError(f"{ip!r} has no finite expiry ({exp!r})")
        if postfix_key(ip) != ip:  # InvalidAddress is a ValueError: set the file aside
            raise ValueError(f"{ip!r} is not a client address key")
        rows.add(ip, expires, str(prof), str(rule))
        if sep == "]":
            return pos
        if sep != ",":
            raise ValueError(f"expected ',' or ']' before character {pos}")


def _skip(text: str, pos: int) -> int:
    found = _SPACE.match(text, pos)
    assert found is not None  # the pattern matches the empty string
    return found.end()


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
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:  # ELOOP: a symlink planted as the lock is never followed
            why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            raise StartupError(
                f"cannot open the lock file {self.path}: {why}; remove it (popbsmtp creates it)"
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StartupError(f"the lock file {self.path} is not a regular file; remove it")
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
