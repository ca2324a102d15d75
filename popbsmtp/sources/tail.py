"""Follow one log file across appends, rotation and restarts.

``read()`` returns the complete lines available now and advances the
position past them; a partial last line is held back until its newline
arrives.  ``stat()`` is the truth about rotation: a new inode at the path
means rename+create (the old file is drained first, and kept draining for a
moment because syslog writes to it until it is told to reopen), a file
shorter than our offset or with a different head means copytruncate (the
copy is found and its rest read first).  Lines longer than
``max_line_length`` are skipped and counted so memory stays bounded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from popbsmtp.sources.position import (
    HEAD_BYTES,
    Position,
    find_rotated,
    position_of,
    same_file,
)

log = logging.getLogger(__name__)

CHUNK = 1 << 20
RETIRE_AFTER = 2.0  # keep reading a rotated file this long after the new one has data
RETIRE_MAX = 60.0


@dataclass
class _Open:
    fd: int
    offset: int
    buf: bytes = b""
    skipping: bool = False
    retire_at: float = 0.0
    head: bytes = b""  # the file's first bytes as we last saw them


@dataclass
class TailStats:
    lines: int = 0
    overlong: int = 0
    rotations: int = 0
    truncations: int = 0
    errors: int = 0
    last_error: str = ""
    waiting: bool = field(default=False)


class FileTail:
    """A followed file; not thread-safe (the core loop owns it)."""

    def __init__(
        self,
        path: str,
        position: Optional[Position] = None,
        *,
        max_line_length: int = 8192,
        clock: Callable[[], float] = time.monotonic,
        initial_offset: Optional[Callable[[int], int]] = None,
    ) -> None:
        self.path = path
        self.max_line_length = max_line_length
        self.clock = clock
        self.initial_offset = initial_offset
        self.stats = TailStats()
        self._saved = position
        self._cur: Optional[_Open] = None
        self._retired: List[_Open] = []

    @property
    def position(self) -> Optional[Position]:
        """Where a restart should resume (start of the held-back partial line)."""
        if self._cur is None:
            return self._saved
        try:
            return position_of(self.path, self._cur.fd, self._cur.offset)
        except OSError:
            return self._saved

    def read(self) -> List[bytes]:
        """All complete lines available now, oldest first."""
        lines: List[bytes] = []
        for old in list(self._retired):
            self._drain(old, lines)
            if self.clock() >= old.retire_at:
                self._finish(old, lines)
        if self._cur is None and not self._open_current(lines):
            return lines
        assert self._cur is not None
        if not self._head_intact(self._cur):
            self._truncated(lines)  # rewritten in place: never read its middle as new
        self._drain(self._cur, lines)
        self._check_rotation(lines)
        return lines

    def close(self) -> None:
        for entry in [*self._retired, self._cur]:
            if entry is not None:
                os.close(entry.fd)
        self._retired.clear()
        self._cur = None

    # -- opening ---------------------------------------------------------

    def _open_current(self, lines: List[bytes]) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            if not self.stats.waiting:
                log.warning("waiting for %s to appear", self.path)
                self.stats.waiting = True
            return False
        except OSError as exc:
            self._error(f"cannot open {self.path}: {exc.strerror}")
            return False
        if self.stats.waiting:
            log.info("%s appeared, following it", self.path)
            self.stats.waiting = False
        self._cur = _Open(fd, self._resume_offset(fd, lines))
        os.lseek(fd, self._cur.offset, os.SEEK_SET)
        self._saved = None
        return True

    def _resume_offset(self, fd: int, lines: List[bytes]) -> int:
        saved = self._saved
        if saved is None:
            return self.initial_offset(fd) if self.initial_offset else 0
        if same_file(saved, fd):
            return saved.offset
        old = find_rotated(saved, os.path.dirname(self.path) or ".")
        if old is not None:
            log.info("%s was rotated while stopped; reading the rest of the old file", self.path)
            entry = _Open(old, saved.offset)
            os.lseek(old, saved.offset, os.SEEK_SET)
            self._drain(entry, lines)
            self._finish(entry, lines)
        return 0

    # -- reading ---------------------------------------------------------

    def _drain(self, entry: _Open, lines: List[bytes]) -> None:
        while True:
            try:
                data = os.read(entry.fd, CHUNK)
            except OSError as exc:
                self._error(f"reading {self.path} failed: {exc.strerror}")
                return
            if not data:
                return
            self._split(entry, entry.buf + data, lines)

    def _split(self, entry: _Open, data: bytes, lines: List[bytes]) -> None:
        parts = data.split(b"\n")
        entry.buf = parts.pop()
        entry.offset += len(data) - len(entry.buf)
        self.stats.lines += len(parts)
        if entry.skipping and parts:
            entry.skipping = False
            parts = parts[1:]  # the tail of an overlong line
        if parts and max(map(len, parts)) > self.max_line_length:
            kept = [p for p in parts if len(p) <= self.max_line_length]
            self.stats.overlong += len(parts) - len(kept)
            parts = kept
        lines.extend(parts)
        if len(entry.buf) > self.max_line_length:
            # Drop the overlong partial now; skip the rest up to its newline.
            if not entry.skipping:
                self.stats.overlong += 1
            entry.offset += len(entry.buf)
            entry.buf = b""
            entry.skipping = True

    def _finish(self, entry: _Open, lines: List[bytes]) -> None:
        """A rotated file is done: its unterminated last line counts as a line."""
        if entry.buf and not entry.skipping:
            lines.append(entry.buf)
            self.stats.lines += 1
        os.close(entry.fd)
        if entry in self._retired:
            self._retired.remove(entry)

    # -- rotation --------------------------------------------------------

    def _check_rotation(self, lines: List[bytes]) -> None:
        cur = self._cur
        assert cur is not None
        try:
            at_path = os.stat(self.path)
        except FileNotFoundError:
            return  # removed or renamed; keep the fd until a new file appears
        except OSError as exc:
            self._error(f"cannot stat {self.path}: {exc.strerror}")
            return
        mine = os.fstat(cur.fd)
        if (at_path.st_dev, at_path.st_ino) != (mine.st_dev, mine.st_ino):
            self._rotated(lines)
        elif mine.st_size < cur.offset + len(cur.buf) or not self._head_intact(cur):
            self._truncated(lines)

    def _head_intact(self, cur: _Open) -> bool:
        """False when the bytes before our offset changed (truncate + refill)."""
        want = min(HEAD_BYTES, cur.offset)
        if want == len(cur.head) == 0:
            return True
        data = os.pread(cur.fd, want, 0)
        if not data.startswith(cur.head):
            return False
        cur.head = data
        return True

    def _rotated(self, lines: List[bytes]) -> None:
        cur = self._cur
        assert cur is not None
        self.stats.rotations += 1
        log.info("%s was rotated; following the new file", self.path)
        now = self.clock()
        cur.retire_at = now + RETIRE_MAX
        self._retired.append(cur)
        self._cur = None
        if self._open_current(lines):
            self._drain(self._cur, lines)  # type: ignore[arg-type]
        for old in self._retired:
            old.retire_at = min(old.retire_at, now + RETIRE_AFTER)

    def _truncated(self, lines: List[bytes]) -> None:
        cur = self._cur
        assert cur is not None
        self.stats.truncations += 1
        digest = hashlib.sha1(cur.head, usedforsecurity=False).hexdigest() if cur.head else ""
        saved = Position(self.path, -1, -1, cur.offset, len(cur.head), digest)
        copy = find_rotated(saved, os.path.dirname(self.path) or ".")
        if copy is not None:
            entry = _Open(copy, cur.offset, cur.buf, cur.skipping)
            os.lseek(copy, cur.offset + len(cur.buf), os.SEEK_SET)
            self._drain(entry, lines)
            self._finish(entry, lines)
            log.info("%s was truncated (copytruncate); read the rest from its copy", self.path)
        else:
            log.warning(
                "%s was truncated; lines after offset %d may be lost", self.path, cur.offset
            )
        cur.offset, cur.buf, cur.skipping, cur.head = 0, b"", False, b""
        os.lseek(cur.fd, 0, os.SEEK_SET)
        self._drain(cur, lines)

    def _error(self, message: str) -> None:
        self.stats.errors += 1
        if message != self.stats.last_error:
            log.error("%s", message)
        self.stats.last_error = message
