"""The read position in a log file, and how to recognise that file again.

A position is (device, inode, offset) plus a digest of the file's first
bytes: inodes are reused after delete+create, so the digest tells a new
file from the one we were reading.  It also keeps what a restart needs to
find a copytruncate copy made while we were stopped (the live file's mtime
when we had read all of it, and the newest rotated sibling then: see
:mod:`popbsmtp.sources.siblings`).  It also finds where a rotated file went
(same inode under another name, or a copytruncate copy with the same head)
so the rest of it can be read before the new file.
"""

from __future__ import annotations

import os
import stat
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

from popbsmtp.sources.siblings import COMPRESSED, HEAD_BYTES, Newest, digest


@dataclass(frozen=True)
class Position:
    path: str
    dev: int
    inode: int
    offset: int
    head_len: int
    head: str
    mtime_ns: int = -1  # -1: unknown (a state file from before these fields)
    newest: Optional[Newest] = None

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> Position:
        """Raises ValueError (or KeyError, TypeError) for a damaged position."""
        return cls(
            path=str(data["path"]),
            dev=_bounded(data["dev"], _ID),
            inode=_bounded(data["inode"], _ID),
            offset=_bounded(data["offset"]),
            head_len=_bounded(data["head_len"], HEAD_BYTES),
            head=str(data["head"]),
            mtime_ns=_bounded(data.get("mtime_ns", -1), low=-1),
            newest=_newest(data.get("newest")),
        )


_LIMIT = 2**63 - 1  # what off_t holds
_ID = 2**64 - 1  # dev_t, ino_t


def _bounded(value: Any, high: int = _LIMIT, low: int = 0) -> int:
    """A whole number in [low, high]: ``1e30`` as an offset would crash pread, not read."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not a number")
    if not (low <= value <= high) or value != int(value):
        raise ValueError(f"{value!r} is out of range")
    return int(value)


def _newest(data: Any) -> Optional[Newest]:
    if data is None:
        return None
    dev, ino, size, mtime, head = data  # ValueError/TypeError: a damaged state file
    return (_bounded(dev, _ID), _bounded(ino, _ID), _bounded(size), _bounded(mtime), str(head))


def head_digest(fd: int, length: int) -> str:
    """Digest of the first ``length`` bytes ("" when the file is shorter)."""
    data = os.pread(fd, length, 0)
    if len(data) < length:
        return ""
    return digest(data)


def position_of(
    path: str, fd: int, offset: int, mtime_ns: int = -1, newest: Optional[Newest] = None
) -> Position:
    info = os.fstat(fd)
    head_len = min(HEAD_BYTES, offset)
    digest = head_digest(fd, head_len)
    return Position(path, info.st_dev, info.st_ino, offset, head_len, digest, mtime_ns, newest)


def same_file(position: Position, fd: int) -> bool:
    """True when ``fd`` is the file the position was taken in, not a reuse."""
    info = os.fstat(fd)
    if (info.st_dev, info.st_ino) != (position.dev, position.inode):
        return False
    if info.st_size < position.offset:
        return False
    return head_digest(fd, position.head_len) == position.head


def find_rotated(position: Position, directory: str) -> Optional[int]:
    """Open the file the position belongs to if it now lives under another name.

    Looks in the log's directory for a plain (uncompressed) sibling with the
    saved inode (rename rotation) or, failing that, with the saved head and
    at least ``offset`` bytes (a copytruncate copy).  Returns an open fd.
    """
    base = os.path.basename(position.path)
    try:
        names = sorted(n for n in os.listdir(directory) if n.startswith(base) and n != base)
    except OSError:
        return None
    by_head = None
    for name in names:
        if name.endswith(COMPRESSED):
            continue
        full = os.path.join(directory, name)
        try:
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and same_file(position, fd):
            if by_head is not None:
                os.close(by_head)
            return fd
        if (
            by_head is None
            and stat.S_ISREG(info.st_mode)
            and info.st_size >= position.offset
            and head_digest(fd, position.head_len) == position.head
            and position.head_len > 0
        ):
            by_head = fd
            continue
        os.close(fd)
    return by_head
