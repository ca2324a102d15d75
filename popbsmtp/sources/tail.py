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
copy is found and its rest read first).  A copytruncate of a generation we
read nothing of (offset 0: no head to match) shows only as a changed
mtime/ctime; then the rotated siblings that are new since we last looked
are read first (:mod:`popbsmtp.sources.siblings`).  A partial line longer than
``max_line_length`` is dropped (and counted) up to its newline so memory
stays bounded; complete overlong lines inside a block are left to the
consumer (``read()`` drops them, the matcher skips overlong candidates).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from typing import Callable, Iterable, List, Optional, Set, Tuple

from popbsmtp.sources.generation import Generation, TailStats
from popbsmtp.sources.position import Position, find_rotated, position_of, same_file
from popbsmtp.sources.siblings import Baseline, Siblings, devino, digest

DevIno = Tuple[int, int]

log = logging.getLogger(__name__)

CHUNK = 1 << 20
BUDGET = 32 << 20  # bytes per read_blocks() call: bounds memory when catching up
RETIRE_AFTER = 2.0  # keep reading a rotated file this long after the new one has data
RETIRE_MAX = 60.0


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
        self._cur: Optional[Generation] = None
        self._retired: List[Generation] = []
        self._budget = 0
        self._first_open = True
        self._siblings = Siblings(path)
        self.more = False  # read_blocks() stopped at its budget: call it again

    def resume(self, position: Optional[Position]) -> None:
        """Where to resume, known once the saved state is read (before the first read)."""
        if self._cur is not None:
            raise RuntimeError("resume() after the tail started reading")
        self._saved = position

    @property
    def position(self) -> Optional[Position]:
        """Where a restart should resume (start of the held-back partial line)."""
        if self._cur is None:
            return self._saved
        try:
            cur = self._cur
            newest = self._siblings.newest
            return position_of(self.path, cur.fd, cur.offset, cur.seen[0], newest)
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
                self._finish(old)
        if self._cur is None and not self._open_current(blocks):
            return blocks
        cur = self._cur
        assert cur is not None
        before = _fstat(cur.fd)
        base: Optional[Baseline] = None
        read: List[DevIno] = []
        if before and cur.untouched and _times(before) != cur.seen:
            base = self._siblings.baseline(cur.seen[0], cur.head)  # copied+truncated unseen?
            read = self._read_copies(blocks, base, cur.fd)
        if not cur.head_intact():
            self._truncated(blocks)  # rewritten in place: never read its middle as new
        if self._drain(cur, blocks):
            if base is not None and before and before.st_size and cur.untouched:
                # Truncated between that look and this read: the copy the look
                # passed over as the live file's twin holds the lines we missed.
                self._read_copies(blocks, base, cur.fd, read)
            if before and cur.offset + len(cur.buf) >= before.st_size:
                cur.seen = _times(before)  # later changes differ from this, even unread ones
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
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            # A FIFO, a directory, /dev/zero: no offsets, no end, or no lines.
            # Reading one would stall the core loop (expiry, SIGTERM) or crash it.
            os.close(fd)
            self._error(f"{self.path} is not a regular file ({_kind(info)}); not reading it")
            return False
        if self.stats.waiting:
            log.info("%s appeared, following it", self.path)
            self.stats.waiting = False
        self.stats.last_error = ""  # the same trouble again is news again
        self._cur = Generation(fd, self._resume_offset(fd, blocks), seen=_times(info))
        os.lseek(fd, self._cur.offset, os.SEEK_SET)
        self._saved = None
        self._siblings.look()
        return True

    def _resume_offset(self, fd: int, blocks: List[bytes]) -> int:
        saved = self._saved
        if saved is None:
            # Only where following starts: a file that appears after a rotation
            # is new, and is read from its first byte.
            first, self._first_open = self._first_open, False
            return self.initial_offset(fd) if first and self.initial_offset else 0
        mtime = os.fstat(fd).st_mtime_ns
        if same_file(saved, fd) and (saved.offset or saved.mtime_ns in (-1, mtime)):
            return saved.offset
        skip: Set[DevIno] = set()
        old = find_rotated(saved, os.path.dirname(self.path) or ".")
        if old is not None:
            log.info("%s was rotated while stopped; reading the rest of the old file", self.path)
            skip.add(devino(old))
            self._read_rest(Generation(old, saved.offset), blocks)
        if saved.mtime_ns != -1:  # copytruncated while stopped, maybe more than once
            base = self._siblings.after_restart(saved.mtime_ns, saved.newest)
            self._read_copies(blocks, base, fd, skip)
        return 0

    # -- reading ---------------------------------------------------------

    def _drain(self, entry: Generation, blocks: List[bytes], bounded: bool = True) -> bool:
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
            entry.take(entry.buf + data, blocks, self.stats, self.max_line_length)
        self.more = True
        return False

    def _read_rest(self, entry: Generation, blocks: List[bytes]) -> None:
        """Read a rotated file or a copy from where ``entry`` stands to its end; close it."""
        os.lseek(entry.fd, entry.offset + len(entry.buf), os.SEEK_SET)
        self._drain(entry, blocks, bounded=False)
        self._finish(entry)

    def _finish(self, entry: Generation) -> None:
        """A rotated file or a copy is done: remember its head, close it."""
        if entry.finish(self.stats):
            log.warning(
                "dropped the unterminated last line of a rotated or copied %s: "
                "a cut line could name another client",
                self.path,
            )
        self._siblings.remember(entry.fd)
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
        elif mine.st_size < cur.offset + len(cur.buf) or not cur.head_intact():
            self._truncated(blocks)

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
        copy: Optional[int] = None
        skip: Set[DevIno] = set()
        if cur.offset:  # the copy starts with the head we read; at offset 0 it is fresh
            saved = Position(self.path, -1, -1, cur.offset, len(cur.head), digest(cur.head))
            copy = find_rotated(saved, os.path.dirname(self.path) or ".")
            self._siblings.heads.append(cur.head)
        if copy is not None:
            skip.add(devino(copy))
            self._read_rest(Generation(copy, cur.offset, cur.buf, cur.skipping), blocks)
            log.info("%s was truncated (copytruncate); read the rest from its copy", self.path)
        # a held-back partial line at offset 0 is read again from its copy
        base = self._siblings.baseline(cur.seen[0], cur.head)
        if not self._read_copies(blocks, base, cur.fd, skip) and copy is None:
            log.warning(
                "%s was truncated; lines after offset %d may be lost", self.path, cur.offset
            )
        cur.offset, cur.buf, cur.skipping, cur.head = 0, b"", False, b""
        os.lseek(cur.fd, 0, os.SEEK_SET)
        self._drain(cur, blocks)

    # -- copies of generations we never saw ------------------------------

    def _read_copies(
        self, blocks: List[bytes], base: Baseline, live: int, skip: Iterable[DevIno] = ()
    ) -> List[DevIno]:
        """Read whole the copies new since ``base``, oldest first; which they were."""
        retired = [devino(entry.fd) for entry in self._retired]
        copies = self._siblings.fresh(base, live, [*skip, *retired])
        read = []
        for fd in copies:
            log.info("%s was copied and truncated unseen; reading its copy", self.path)
            read.append(devino(fd))
            self._read_rest(Generation(fd, 0), blocks)
        return read

    def _error(self, message: str) -> None:
        self.stats.errors += 1
        if message != self.stats.last_error:
            log.error("%s", message)
        self.stats.last_error = message


def _fstat(fd: int) -> Optional[os.stat_result]:
    try:
        return os.fstat(fd)
    except OSError:
        return None


def _kind(info: os.stat_result) -> str:
    mode = info.st_mode
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a plain file"


def _times(info: os.stat_result) -> Tuple[int, int]:
    return (info.st_mtime_ns, info.st_ctime_ns)
