"""One generation of the followed log as the tail reads it: lines out of bytes.

A generation is one file's content between rotations: the live file, a
rotated one still being drained, or a copytruncate copy.  It knows its
offset, the partial last line held back until its newline arrives, an
overlong partial line being skipped, and the first bytes it had when we
read them (to notice a truncate + refill).  It does not open files, read
them or decide about rotation (``tail.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Tuple

from popbsmtp.sources.siblings import HEAD_BYTES


@dataclass
class TailStats:
    lines: int = 0
    overlong: int = 0
    torn: int = 0  # unterminated last lines of finished files, dropped
    rotations: int = 0
    truncations: int = 0
    errors: int = 0
    last_error: str = ""
    waiting: bool = field(default=False)


@dataclass
class Generation:
    fd: int
    offset: int
    buf: bytes = b""
    skipping: bool = False
    retire_at: float = 0.0
    head: bytes = b""  # the file's first bytes as we last saw them
    seen: Tuple[int, int] = (-1, -1)  # mtime_ns, ctime_ns when we last had read all of it

    @property
    def untouched(self) -> bool:
        """Nothing of it read yet (no head to recognise a copy of it by)."""
        return not (self.offset or self.buf or self.skipping)

    def take(self, data: bytes, blocks: List[bytes], stats: TailStats, limit: int) -> None:
        """Keep the complete lines of ``data`` as one block; hold back the rest."""
        end = data.rfind(b"\n") + 1
        block, self.buf = data[:end], data[end:]
        if self.offset == 0 and not self.head:
            # the head now, not at the next look: a copytruncate may come first
            self.head = block[:HEAD_BYTES]
        self.offset += end
        stats.lines += block.count(b"\n")
        if self.skipping and block:
            self.skipping = False
            block = block[block.find(b"\n") + 1 :]  # the tail of an overlong line
        if block:
            blocks.append(block)
        if len(self.buf) > limit:
            # Drop the overlong partial now; skip the rest up to its newline.
            if not self.skipping:
                stats.overlong += 1
            self.offset += len(self.buf)
            self.buf = b""
            self.skipping = True

    def finish(self, stats: TailStats) -> bool:
        """The generation is done: drop its unterminated last line; True if there was one.

        A line without its newline may be cut anywhere, and a cut address is
        another address (``192.0.2.1`` of ``192.0.2.123``): it never grants.
        Its rest, if the writer goes on in the next file, matches nothing.
        """
        torn = bool(self.buf) and not self.skipping
        if torn:
            stats.torn += 1
        self.buf = b""
        return torn

    def head_intact(self) -> bool:
        """False when the bytes before our offset changed (truncate + refill)."""
        want = min(HEAD_BYTES, self.offset)
        if want == len(self.head) == 0:
            return True
        data = os.pread(self.fd, want, 0)
        if not data.startswith(self.head):
            return False
        self.head = data
        return True
