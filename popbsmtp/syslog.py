"""Split a syslog line into its envelope: time, host, program, pid, message.

Two formats are understood: the traditional BSD one
(``Nov 27 04:48:08 host prog[pid]: msg``, local time, no year) and RFC 3339
high-precision timestamps (``2026-11-27T04:48:08.123456+00:00 host ...``,
Debian 12's rsyslog default).  The parser only splits; it never decides
whether a message is a login (that is :mod:`popbsmtp.matcher`'s job).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
import time
from dataclasses import dataclass
from typing import Optional

# ASCII-only classes on purpose: `\d` would accept Unicode digits.
_PROGRAM = r"(?P<prog>[A-Za-z0-9_./-]{1,64})(?:\[(?P<pid>[0-9]{1,10})\])?: "
_RFC3164 = re.compile(
    r"(?P<mon>[A-Z][a-z]{2}) (?P<day>[ 0-9][0-9]) (?P<hms>[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.[0-9]{1,6})? (?P<host>[^ ]{1,255}) " + _PROGRAM
)
_RFC3339 = re.compile(
    r"(?P<stamp>[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
    r"(?:Z|[+-][0-9]{2}:?[0-9]{2}))"
    r" (?P<host>[^ ]{1,255}) " + _PROGRAM
)
_MONTHS = {name: i for i, name in enumerate(calendar.month_abbr) if name}
FORMATS = ("auto", "rfc3164", "rfc3339")


@dataclass(frozen=True)
class Envelope:
    """One parsed log line; ``time`` is a Unix timestamp (UTC seconds)."""

    time: float
    host: str
    program: str
    pid: Optional[int]
    message: str


class EnvelopeParser:
    """Parse envelopes in one of :data:`FORMATS`; ``now`` infers BSD years.

    A BSD timestamp has no year: it is taken from ``now``, and a stamp that
    would lie more than a day in the future belongs to the previous year
    (a Dec 31 line read on Jan 1).
    """

    def __init__(self, log_format: str = "auto") -> None:
        if log_format not in FORMATS:
            raise ValueError(f"unknown log format {log_format!r}")
        self.log_format = log_format

    def parse(self, line: str, now: float) -> Optional[Envelope]:
        """Return the envelope, or None when the line has no recognised one."""
        if self.log_format != "rfc3339":
            match = _RFC3164.match(line)
            if match:
                stamp = _bsd_time(match, now)
                return None if stamp is None else _envelope(stamp, match, line)
        if self.log_format != "rfc3164":
            match = _RFC3339.match(line)
            if match:
                stamp = _iso_time(match.group("stamp"))
                return None if stamp is None else _envelope(stamp, match, line)
        return None


def _envelope(stamp: float, match: re.Match, line: str) -> Envelope:
    pid = match.group("pid")
    return Envelope(
        time=stamp,
        host=match.group("host"),
        program=match.group("prog"),
        pid=int(pid) if pid else None,
        message=line[match.end() :],
    )


def _bsd_time(match: re.Match, now: float) -> Optional[float]:
    month = _MONTHS.get(match.group("mon"))
    if month is None:
        return None
    hour, minute, second = (int(x) for x in match.group("hms").split(":"))
    year = time.localtime(now).tm_year
    for candidate in (year, year - 1):
        try:
            stamp = time.mktime(
                (candidate, month, int(match.group("day")), hour, minute, second, 0, 0, -1)
            )
        except (OverflowError, ValueError):
            return None
        if stamp <= now + 86400:
            return stamp
    return None


def _iso_time(text: str) -> Optional[float]:
    text = text.replace(" ", "T", 1)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    head, sep, frac_tz = text.partition(".")
    if sep:  # fromisoformat in 3.9/3.10 takes at most 6 fraction digits
        digits = re.match(r"[0-9]*", frac_tz)
        assert digits is not None
        frac = digits.group(0)
        text = head + "." + (frac[:6].ljust(6, "0")) + frac_tz[len(frac) :]
    if re.search(r"[+-][0-9]{4}$", text):
        text = text[:-2] + ":" + text[-2:]
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except (ValueError, OverflowError):
        return None
