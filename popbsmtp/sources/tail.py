"""Follow one log file across appends, rotation and restarts.

``read_blocks()`` returns the complete lines available now as a few large
blocks of bytes (each ending in a newline), at most about ``BUDGET`` bytes
per call (``more`` says whether to call again), and advances the position
past them; a partial last line is held back until its newline arrives.
Blocks, not lines, because splitting a busy log into line objects costs more
than everything else the daemon does with it.  ``read()`` gives the same as
a list of lines.  ``stat()`` is the truth about rotation: a new inode at the path
means rename+create (the old file is drained first, and kept draining for a
moment because syslog writes to it until it is told to reopen), a file
shorter than our offset or with a different head means copytruncate (the
copy is found and its rest read first).  A partial line longer than
``max_line_length`` is dropped (and counted) up to its newline so memory
stays bounded; complete overlong lines inside a block are left to the
consumer (``read()`` drops them, the matcher skips overlong candidates).
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
BUDGET = 32 << 20  # bytes per read_blocks() call: bounds memory when catching up
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
    """A followed file; not thread-safe (the core loop owns it).

    ``position`` is where to resume; without one, ``initial_offset(fd)``
    (if given) says where in the file first opened to start, e.g. the start
    of the last grace window (:mod:`popbsmtp.sources.window`).
    """

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
        self._budget = 0
        self._first_open = True
        self.more = False  # read_blocks() stopped at its budget: call it again

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
        """All complete lines available now, oldest first, overlong ones dropped."""
        lines: List[bytes] = []
        while True:
            for block in self.read_blocks():
                parts = block.split(b"\n")
                parts.pop()  # a block ends with a newline
                kept = [p for p in parts if len(p) <= self.max_line_length]
                self.stats.overlong += len(parts) - len(kept)
                lines.extend(kept)
            if not self.more:
                return lines

    def read_blocks(self, budget: int = BUDGET) -> List[bytes]:
        """Complete lines available now as blocks, oldest first (see the module doc)."""
        blocks: List[bytes] = []
        self._budget, self.more = budget, False
        for old in list(self._retired):
            if not self._drain(old, blocks):
                return blocks
            if self.clock() >= old.retire_at:
                self._finish(old, blocks)
        if self._cur is None and not self._open_current(blocks):
            return blocks
        assert self._cur is not None
        if not self._head_intact(self._cur):
            self._truncated(blocks)  # rewritten in place: never read its middle as new
        if self._drain(self._cur, blocks):
            self._check_rotation(blocks)
        return blocks

    def close(self) -> None:
        for entry in [*self._retired, self._cur]:
            if entry is not None:
                os.close(entry.fd)
        self._retired.clear()
        self._cur = None

    # -- opening ---------------------------------------------------------

    def _open_current(self, blocks: List[bytes]) -> bool:
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
        self._cur = _Open(fd, self._resume_offset(fd, blocks))
        os.lseek(fd, self._cur.offset, os.SEEK_SET)
        self._saved = None
        return True

    def _resume_offset(self, fd: int, blocks: List[bytes]) -> int:
        saved = self._saved
        if saved is None:
            # Only where following starts: a file that appears after a rotation
            # is new, and is read from its first byte.
            first, self._first_open = self._first_open, False
            return self.initial_offset(fd) if first and self.initial_offset else 0
        if same_file(saved, fd):
            return saved.offset
        old = find_rotated(saved, os.path.dirname(self.path) or ".")
        if old is not None:
            log.info("%s was rotated while stopped; reading the rest of the old file", self.path)
            entry = _Open(old, saved.offset)
            os.lseek(old, saved.offset, os.SEEK_SET)
            self._drain(entry, blocks, bounded=False)
            self._finish(entry, blocks)
        return 0

    # -- reading ---------------------------------------------------------

    def _drain(self, entry: _Open, blocks: List[bytes], bounded: bool = True) -> bool:
        """Read to the end of the file (True) or until the budget is spent (False)."""
        while not bounded or self._budget > 0:
            try:
                data = os.read(entry.fd, CHUNK)
            except OSError as exc:
                self._error(f"reading {self.path} failed: {exc.strerror}")
                return True
            if not data:
                return True
            self._budget -= len(data)
            self._take(entry, entry.buf + data, blocks)
        self.more = True
        return False

    def _take(self, entry: _Open, data: bytes, blocks: List[bytes]) -> None:
        """Keep the complete lines of ``data`` as one block; hold back the rest."""
        end = data.rfind(b"\n") + 1
        block, entry.buf = data[:end], data[end:]
        entry.offset += end
        self.stats.lines += block.count(b"\n")
        if entry.skipping and block:
            entry.skipping = False
            block = block[block.find(b"\n") + 1 :]  # the tail of an overlong line
        if block:
            blocks.append(block)
        if len(entry.buf) > self.max_line_length:
            # Drop the overlong partial now; skip the rest up to its newline.
            if not entry.skipping:
                self.stats.overlong += 1
            entry.offset += len(entry.buf)
            entry.buf = b""
            entry.skipping = True

    def _finish(self, entry: _Open, blocks: List[bytes]) -> None:
        """A rotated file is done: its unterminated last line counts as a line."""
        if entry.buf and not entry.skipping:
            blocks.append(entry.buf + b"\n")
            self.stats.lines += 1
        os.close(entry.fd)
        if entry in self._retired:
            self._retired.remove(entry)

    # -- rotation --------------------------------------------------------

    def _check_rotation(self, blocks: List[bytes]) -> None:
        cur = self._cur
        assert cur is not None
        try:
            at_path = os.stat(self.path)
        except FileNotFoundError:
            # Removed or renamed: keep reading the fd until a new file appears.
            if not self.stats.waiting:
                # info, not warning: a rename rotation passes through here too
                log.info("%s is gone (rotated or removed); waiting for a new one", self.path)
                self.stats.waiting = True
            return
        except OSError as exc:
            self._error(f"cannot stat {self.path}: {exc.strerror}")
            return
        mine = os.fstat(cur.fd)
        if (at_path.st_dev, at_path.st_ino) != (mine.st_dev, mine.st_ino):
            self._rotated(blocks)
        elif mine.st_size < cur.offset + len(cur.buf) or not self._head_intact(cur):
            self._truncated(blocks)

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

    def _rotated(self, blocks: List[bytes]) -> None:
        cur = self._cur
        assert cur is not None
        self.stats.rotations += 1
        log.info("%s was rotated; following the new file", self.path)
        now = self.clock()
        cur.retire_at = now + RETIRE_MAX
        self._retired.append(cur)
        self._cur = None
        if self._open_current(blocks):
            self._drain(self._cur, blocks)  # type: ignore[arg-type]
        for old in self._retired:
            old.retire_at = min(old.retire_at, now + RETIRE_AFTER)

    def _truncated(self, blocks: List[bytes]) -> None:
        cur = self._cur
        assert cur is not None
        self.stats.truncations += 1
        digest = hashlib.sha1(cur.head, usedforsecurity=False).hexdigest() if cur.head else ""
        saved = Position(self.path, -1, -1, cur.offset, len(cur.head), digest)
        copy = find_rotated(saved, os.path.dirname(self.path) or ".")
        if copy is not None:
            entry = _Open(copy, cur.offset, cur.buf, cur.skipping)
            os.lseek(copy, cur.offset + len(cur.buf), os.SEEK_SET)
            self._drain(entry, blocks, bounded=False)
            self._finish(entry, blocks)
            log.info("%s was truncated (copytruncate); read the rest from its copy", self.path)
        else:
            log.warning(
                "%s was truncated; lines after offset %d may be lost", self.path, cur.offset
            )
        cur.offset, cur.buf, cur.skipping, cur.head = 0, b"", False, b""
        os.lseek(cur.fd, 0, os.SEEK_SET)
        self._drain(cur, blocks)

    def _error(self, message: str) -> None:
        self.stats.errors += 1
        if message != self.stats.last_error:
            log.error("%s", message)
        self.stats.last_error = message
