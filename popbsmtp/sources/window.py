"""Where the last ``grace`` window of a log starts, found without reading the log.

With no saved position the daemon only needs the lines young enough to
grant anything: older logins are refused as too old anyway.  A log is
(nearly) sorted by time, so the first line at or after a cut-off time is
found by bisecting on byte offsets, parsing one line's timestamp per probe:
some 30 small reads for a 1 GB log instead of reading all of it.

Logs are only nearly sorted (several writers, clock steps), so the caller
asks for a cut-off with some slack; lines whose envelope cannot be parsed
are stepped over (:func:`grace_start` asks for the daemon's cut-off: the
last ``grace``, less ``SLACK``).  This module never decides what a line
means, only when it was written.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Tuple

from popbsmtp.parse.envelope import EnvelopeParser

# Reading this much around a probe finds a parseable line in any real log.
PROBE = 16 << 10
# Below this many bytes between the bounds, scan forward instead of bisecting.
SCAN = 64 << 10

SLACK = 300.0  # log lines are only nearly in time order

Stamp = Callable[[bytes], Optional[float]]


def grace_start(fd: int, parser: EnvelopeParser, now: float, grace: float) -> int:
    """Where a start without a saved position reads from: the last ``grace``, plus slack.

    Only the last ``grace`` counts, as after a restart with a position:
    sessions are not kept across restarts (fail closed), so a session opened
    earlier and still open needs a new login, and a start never reads a day
    of log.
    """

    def stamp(line: bytes) -> Optional[float]:
        envelope = parser.parse(line.decode("utf-8", "replace"), now)
        return None if envelope is None else envelope.time

    return window_start(fd, stamp, now - grace - SLACK)


def window_start(fd: int, stamp: Stamp, cutoff: float) -> int:
    """Offset of the first complete line to read so no line at or after ``cutoff`` is missed.

    ``stamp(line)`` returns a line's time or None when it has none.  Returns
    0 when the first stamped line is already young enough (or none has a
    stamp), and the end of the last complete line when every line is older.
    """
    size = os.fstat(fd).st_size
    low, high = 0, size  # the answer lies in [low, high]; low is a line start
    while high - low > SCAN:
        mid = (low + high) // 2
        found = _stamped_line_after(fd, mid, high, stamp)
        if found is None or found[1] >= cutoff:
            high = mid
        else:
            low = found[0]  # that line is old: the answer starts after it
    return _scan(fd, low, size, stamp, cutoff)


def _stamped_line_after(
    fd: int, offset: int, limit: int, stamp: Stamp
) -> Optional[Tuple[int, float]]:
    """(start, time) of the first stamped line starting after ``offset``, before ``limit``."""
    data = os.pread(fd, PROBE, offset)
    pos = data.find(b"\n") + 1
    while pos > 0 and offset + pos < limit:
        end = data.find(b"\n", pos)
        if end < 0:
            return None  # no complete stamped line in the probe: treat as young
        when = stamp(data[pos:end])
        if when is not None:
            return offset + pos, when
        pos = end + 1
    return None


def _scan(fd: int, offset: int, size: int, stamp: Stamp, cutoff: float) -> int:
    """Walk lines from ``offset``: stop at the first stamped line at or after the cut-off."""
    start = offset  # just after the last line known to be older than the cut-off
    buf = b""
    while offset < size:
        data = os.pread(fd, PROBE, offset)
        if not data:
            break
        buf += data
        offset += len(data)
        pos = 0
        while True:
            end = buf.find(b"\n", pos)
            if end < 0:
                break
            when = stamp(buf[pos:end])
            if when is not None and when >= cutoff:
                return start
            if when is not None:
                start = offset - len(buf) + end + 1
            pos = end + 1
        buf = buf[pos:]
    return start
