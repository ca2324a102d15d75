"""The rotated siblings of a log (``mail.log.1``, ``mail.log-20261127``): which are new.

A copytruncate done between two of our reads leaves a generation of the log
we never saw only in a copy.  When we had read nothing of that generation
(offset 0) there is no head to recognise the copy by, so the copy is found by
novelty instead: a sibling is *fresh* when its identity (device, inode, size,
mtime) is not one we saw at our last look at the directory, its mtime is not
older than the live file's when we last had read all of it, and its first
bytes are not those of a generation we already read.  After a restart only
the newest sibling's identity is known (it is saved in the position), so a
fresh sibling must then also be strictly newer than it.

This module does not decide *when* to look (``tail.py`` does, from the live
file's mtime/ctime), does not read the copies, and ignores compressed ones.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, FrozenSet, Iterable, List, Optional, Sequence, Set, Tuple

HEAD_BYTES = 256
KNOWN_HEADS = 32  # first bytes of the last generations read: never read them again
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".Z")
# what follows the log's name: .1, -20261127, _2026-11-27 ... (not mail.log.lock)
ROTATED_SUFFIX = re.compile(r"[._-][0-9][0-9._-]*\Z")

Identity = Tuple[int, int, int, int]  # device, inode, size, mtime_ns
# the newest sibling as saved in a position: identity + digest of its first bytes
Newest = Tuple[int, int, int, int, str]


@dataclass(frozen=True)
class Baseline:
    """What we knew when we last looked.

    ``seen`` is None after a restart (only ``newest`` survived); ``live_mtime``
    is the live file's mtime_ns when we last had read all of it; ``heads``
    are the first bytes of generations already read (never read them again).
    """

    seen: Optional[FrozenSet[Identity]]
    newest: Optional[Newest]
    live_mtime: int
    heads: Tuple[bytes, ...] = ()


try:  # CPython's own SHA-1: hashlib would load OpenSSL (megabytes of RSS) for this alone
    from _sha1 import sha1 as _sha1
except ImportError:  # a build without it (some distributions keep only OpenSSL's)
    import hashlib

    def _sha1(data: bytes) -> Any:
        return hashlib.sha1(data, usedforsecurity=False)


def digest(data: bytes) -> str:
    """Hex SHA-1 of a file's first bytes: identifies a generation of the log, no secret."""
    return _sha1(data).hexdigest()


def _names(path: str) -> List[str]:
    directory, base = os.path.split(path)
    try:
        names = os.listdir(directory or ".")
    except OSError:
        return []
    return [
        os.path.join(directory, n)
        for n in names
        if n.startswith(base) and ROTATED_SUFFIX.match(n, len(base)) and not n.endswith(COMPRESSED)
    ]


def _open(name: str) -> Optional[int]:
    try:  # O_NOFOLLOW: a symlink planted among the logs is never read
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None


def _identity(info: os.stat_result) -> Identity:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def look(path: str) -> List[Tuple[str, Identity]]:
    """The plain rotated siblings now: (path, identity); vanished ones are left out."""
    found = []
    for name in _names(path):
        try:
            info = os.lstat(name)
        except OSError:
            continue  # rotated away between listdir and lstat
        if stat.S_ISREG(info.st_mode):
            found.append((name, _identity(info)))
    return found


def newest_of(siblings: Sequence[Tuple[str, Identity]]) -> Optional[Newest]:
    """The most recently modified sibling, with a digest of its first bytes."""
    for name, ident in sorted(siblings, key=lambda s: s[1][3], reverse=True):
        fd = _open(name)
        if fd is None:
            continue
        try:
            return (*ident, digest(os.pread(fd, min(HEAD_BYTES, ident[2]), 0)))
        except OSError:
            continue
        finally:
            os.close(fd)
    return None


def _age(name: str, ident: Identity) -> Tuple[int, int]:
    """Sort key, oldest first: mtime, then mail.log.2 before mail.log.1."""
    number = re.search(r"([0-9]+)\Z", name)
    return (ident[3], -int(number.group(1)) if number else 0)


def _is_fresh(fd: int, ident: Identity, base: Baseline, live_head: bytes) -> bool:
    if ident[2] == 0 or ident[3] < base.live_mtime:
        return False
    head = os.pread(fd, HEAD_BYTES, 0)
    for known in (*base.heads, live_head):
        if known and head and (head.startswith(known) or known.startswith(head)):
            return False  # a copy of a generation we read, or of the live one
    newest = base.newest
    if base.seen is None and newest is not None:
        if ident[3] <= newest[3]:
            return False  # without the full picture, only strictly newer is safe
        if ident[:2] == newest[:2] and digest(head[: min(HEAD_BYTES, newest[2])]) == newest[4]:
            return False  # the same file, written to since: not a copy
    return True


def fresh_copies(
    path: str, base: Baseline, live_head: bytes, skip: Set[Tuple[int, int]]
) -> Tuple[List[int], List[Tuple[str, Identity]]]:
    """Open the fresh siblings (see the module doc), oldest first.

    ``skip`` holds (device, inode) of files we have open; ``live_head`` is
    the live file's first bytes now.  Also returns the siblings as seen, to
    become the next baseline (whatever appears after this look is new).
    """
    fresh: List[Tuple[Tuple[int, int], int]] = []
    seen: List[Tuple[str, Identity]] = []
    for name, ident in look(path):
        if ident[2] == 0 or (base.seen is not None and ident in base.seen):
            seen.append((name, ident))  # not opened: an idle directory costs lstat()s
            continue
        fd = _open(name)
        if fd is None:
            continue  # rotated away, or a symlink
        try:
            info = os.fstat(fd)  # the file opened, whatever lstat() saw
            ident = _identity(info)
            if stat.S_ISREG(info.st_mode):
                seen.append((name, ident))
                if ident[:2] not in skip and _is_fresh(fd, ident, base, live_head):
                    fresh.append((_age(name, ident), fd))
                    continue
        except OSError:
            pass
        os.close(fd)
    return [fd for _, fd in sorted(fresh)], seen


class Siblings:
    """What a tail knows of its log's rotated siblings and of the generations it read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.seen: List[Tuple[str, Identity]] = []  # as of our last look
        self.newest: Optional[Newest] = None
        self.heads: Deque[bytes] = deque(maxlen=KNOWN_HEADS)

    def look(self) -> None:
        """Take the siblings as they are now as the baseline."""
        self.seen = look(self.path)
        self.newest = newest_of(self.seen)

    def remember(self, fd: int) -> None:
        """A generation was read (or read to its end): never take a copy of it for new."""
        with contextlib.suppress(OSError):
            self.heads.append(os.pread(fd, HEAD_BYTES, 0))

    def baseline(self, live_mtime: int, head: bytes = b"") -> Baseline:
        seen = frozenset(ident for _, ident in self.seen)
        return Baseline(seen, self.newest, live_mtime, (*self.heads, head))

    def after_restart(self, live_mtime: int, newest: Optional[Newest]) -> Baseline:
        return Baseline(None, newest, live_mtime, tuple(self.heads))

    def fresh(self, base: Baseline, live_fd: int, skip: Iterable[Tuple[int, int]]) -> List[int]:
        """Open the copies new since ``base``, oldest first; they become the baseline."""
        try:
            live_head = os.pread(live_fd, HEAD_BYTES, 0)
        except OSError:
            live_head = b""
        copies, self.seen = fresh_copies(self.path, base, live_head, set(skip))
        self.newest = newest_of(self.seen)
        return copies


def devino(fd: int) -> Tuple[int, int]:
    info = os.fstat(fd)
    return (info.st_dev, info.st_ino)
