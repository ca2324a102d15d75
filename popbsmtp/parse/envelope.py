"""Split a log line into its envelope: time, host, program, pid, message.

Understood formats (``log_format``):

- ``rfc3164``: traditional BSD syslog, ``Nov 27 04:48:08 host prog[pid]: msg``
  (local time, no year; RHEL, FreeBSD, older Debian/Ubuntu).
- ``rfc3339``: rsyslog's high-precision stamps,
  ``2026-11-27T04:48:08.123456+00:00 host prog[pid]: msg`` (Debian 12+,
  Ubuntu 24.04+).
- ``rfc5424``: ``<PRI>1 2026-11-27T04:48:08Z host app procid msgid SD msg``
  as written by rsyslog's ``RSYSLOG_SyslogProtocol23Format`` (``<PRI>``
  optional, ``-`` for an absent pid).
- ``dovecot``: Dovecot's own ``log_path``/``info_log_path`` file:
  ``Nov 27 04:48:08 imap-login: Info: Login: …`` (2.x; also with an ISO
  ``log_timestamp``) and ``dovecot: Nov 27 04:48:08 Info: imap-login: …``
  (1.x).  There is no host; the program is reported as ``dovecot`` so the
  same profile rules apply, and the message keeps Dovecot's ``Info: `` level
  (the dovecot profile allows it).
- ``qpopper``: qpopper's trace file, ``Wed Nov 27 04:48:08 2026 [pid] msg``
  (program ``popper``).
- ``apple``: Apple Mail Server's own log, ``Nov 27 2026 04:48:08 msg``
  (program ``AppleMailServer``).
- ``auto``: the formats syslog writes (rfc3164, rfc3339, rfc5424), decided
  per line by its first character.  Never the servers' own-log shapes
  (dovecot, qpopper, apple): those files have no host and no program, so
  inside a syslog file such a line could be anything a local user logged.
  They are read only from a file configured as that server's own log
  (``log_format`` naming it).

The parser only splits; it never decides whether a message is a login (that
is :mod:`popbsmtp.parse.matcher`'s job).  A line no format accepts yields None and
the matcher counts it as unparseable.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import re
import time
from typing import Callable, Dict, NamedTuple, Optional, Tuple

# ASCII-only classes on purpose: `\d` would accept Unicode digits.
_PROGRAM = r"(?P<prog>[A-Za-z0-9_./-]{1,64})(?:\[(?P<pid>[0-9]{1,10})\])?: "
_BSD_STAMP = (
    r"(?P<mon>[A-Z][a-z]{2}) (?P<day>[ 0-9][0-9]) (?P<hms>[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.[0-9]{1,6})?"
)
_ISO_STAMP = (
    r"(?P<sec>[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.(?P<frac>[0-9]{1,9}))?"
    r"(?P<zone>Z|[+-][0-9]{2}:?[0-9]{2})"
)
# A host never ends in ':'; that keeps Dovecot's "imap-login: Info:" from
# being read as host "imap-login:" and program "Info".
_HOST = r"(?P<host>[^ ]{0,254}[^ :])"
_RFC3164 = re.compile(_BSD_STAMP + " " + _HOST + " " + _PROGRAM)
_RFC3339 = re.compile(_ISO_STAMP + " " + _HOST + " " + _PROGRAM)
_RFC5424 = re.compile(
    r"(?:<[0-9]{1,3}>)?1 " + _ISO_STAMP + r" (?P<host>[!-~]{1,255}) (?P<prog>[!-~]{1,48})"
    r" (?:-|(?P<pid>[0-9]{1,10})|[!-~]{1,128}) (?:-|[!-~]{1,32}) "
)
_LEVEL_WORDS = "Info|Warning|Error|Fatal|Panic|Debug"
_LEVELS = r"(?:" + _LEVEL_WORDS + "): "
_DOVECOT_LOCAL = (
    r"(?P<local>[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?)"
)
# 2.x: "<stamp> imap-login: Info: ..." or "<stamp> imap(user)<pid><id>: Info: ...".
_DOVECOT2 = re.compile(
    r"(?:" + _BSD_STAMP + "|" + _DOVECOT_LOCAL + r") "
    r"(?=[a-z][a-z0-9-]{0,31}(?:\(|: " + _LEVELS + "))"
)
# 1.x: "dovecot: <stamp> Info: imap-login: ...".
_DOVECOT1 = re.compile(
    r"dovecot: (?:" + _BSD_STAMP + "|" + _DOVECOT_LOCAL + r") (?=" + _LEVELS + ")"
)
_QPOPPER = re.compile(
    r"[A-Z][a-z]{2} " + _BSD_STAMP + r" (?P<year>[0-9]{4}) \[(?P<pid>[0-9]{1,10})\] "
)
_APPLE = re.compile(
    r"(?P<mon>[A-Z][a-z]{2}) (?P<day>[ 0-9][0-9]) (?P<year>[0-9]{4}) "
    r"(?P<hms>[0-9]{2}:[0-9]{2}:[0-9]{2}) "
)
_MONTHS = {name: i for i, name in enumerate(calendar.month_abbr) if name}
# Programs named by the parser for servers' own log files (not in the line).
INVENTED_PROGRAMS = frozenset({"dovecot", "popper", "AppleMailServer"})
FORMATS = ("auto", "rfc3164", "rfc3339", "rfc5424", "dovecot", "qpopper", "apple")


class Envelope(NamedTuple):
    """One parsed log line; ``time`` is a Unix timestamp (UTC seconds).

    A named tuple because one is built per candidate line (cheaper than a
    frozen dataclass, and as immutable).
    """

    time: float
    host: str
    program: str
    pid: Optional[int]
    message: str


Splitter = Callable[[str, float], Optional[Envelope]]


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
        # What :meth:`parse` calls; the matcher's per-line loop calls it directly.
        self.split: Splitter = _auto if log_format == "auto" else _SPLITTERS[log_format]

    def parse(self, line: str, now: float) -> Optional[Envelope]:
        """Return the envelope, or None when the line has no recognised one.

        With ``auto`` the line's first character picks the syslog format
        (:data:`_AUTO`): each line on its own, whatever came before it.
        """
        return self.split(line, now)


def _syslog(regex: re.Pattern[str], iso: bool) -> Splitter:
    """The split for a one-regex syslog format.

    The hot path of every candidate line: the pattern's six groups are, in
    order, the stamp's three parts, host, program and pid, so one
    ``groups()`` call fetches them; the ISO fraction is added here rather
    than in a call; and the envelope is made without the named tuple's
    ``__new__`` (same tuple, a third of the cost).
    """
    names = ("sec", "frac", "zone") if iso else ("mon", "day", "hms")
    if [regex.groupindex[name] for name in (*names, "host", "prog", "pid")] != [1, 2, 3, 4, 5, 6]:
        raise AssertionError(f"envelope groups out of order: {regex.pattern}")
    match_line = regex.match
    make = tuple.__new__

    def split(line: str, now: float) -> Optional[Envelope]:
        match = match_line(line)
        if match is None:
            return None
        first, second, third, host, prog, pid = match.groups()
        if not iso:
            stamp = _bsd_time(first, second, third, now)
        else:
            # aware datetime.timestamp(): total microseconds / 10**6, exactly rounded
            stamp = _iso_base(first, third)
            if stamp is not None and second is not None:
                micro = int(second) if len(second) == 6 else int(second[:6].ljust(6, "0"))
                stamp = (int(stamp) * 1_000_000 + micro) / 1_000_000
        if stamp is None:
            return None
        message = line[match.end() :]
        return make(Envelope, (stamp, host, prog, int(pid) if pid else None, message))

    return split


_rfc5424_envelope = _syslog(_RFC5424, iso=True)


def _rfc5424(line: str, now: float) -> Optional[Envelope]:
    envelope = _rfc5424_envelope(line, now)
    if envelope is None:
        return None
    message = _skip_structured_data(envelope.message)
    if message is None:
        return None
    if message.startswith("\ufeff"):  # RFC 5424 lets MSG start with a UTF-8 BOM
        message = message[1:]
    return Envelope(envelope.time, envelope.host, envelope.program, envelope.pid, message)


def _skip_structured_data(text: str) -> Optional[str]:
    """MSG after STRUCTURED-DATA (``-`` or ``[id k="v" ...]...``), None if malformed.

    A hand scan, not a regex: quoted values may contain escaped ``\\]`` and
    ``\\"``, and a loop over characters cannot backtrack.
    """
    if text.startswith("-"):
        return text[2:] if text.startswith("- ") else (None if text[1:] else "")
    pos, quoted = 0, False
    while pos < len(text):
        char = text[pos]
        if quoted:
            if char == "\\":
                pos += 1
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "]" and not text.startswith("[", pos + 1):
            rest = text[pos + 1 :]
            return rest[1:] if rest.startswith(" ") else (None if rest else "")
        pos += 1
    return None


def _dovecot(line: str, now: float) -> Optional[Envelope]:
    for regex in (_DOVECOT2, _DOVECOT1):
        match = regex.match(line)
        if match is None:
            continue
        local = match.group("local")
        stamp = _local_time(local) if local else _bsd_match_time(match, now)
        if stamp is None:
            return None
        message = line[match.end() :]
        if regex is _DOVECOT1:  # "Info: imap-login: Login: ..." -> "imap-login: Info: ..."
            level, _, rest = message.partition(": ")
            prefix, sep, tail = rest.partition(": ")
            message = f"{prefix}: {level}: {tail}" if sep else message
        return Envelope(stamp, "", "dovecot", None, message)
    return None


def _own_file(regex: re.Pattern[str], program: str, has_pid: bool) -> Splitter:
    """A server's own log file with dated stamps (qpopper's trace, Apple's log)."""

    def split(line: str, now: float) -> Optional[Envelope]:
        match = regex.match(line)
        if match is None:
            return None
        stamp = _dated(match)
        if stamp is None:
            return None
        pid = int(match.group("pid")) if has_pid else None
        return Envelope(stamp, "", program, pid, line[match.end() :])

    return split


_SPLITTERS: Dict[str, Splitter] = {
    "rfc3164": _syslog(_RFC3164, iso=False),
    "rfc3339": _syslog(_RFC3339, iso=True),
    "rfc5424": _rfc5424,
    "dovecot": _dovecot,
    "qpopper": _own_file(_QPOPPER, "popper", has_pid=True),
    "apple": _own_file(_APPLE, "AppleMailServer", has_pid=False),
}

# ``auto``: the syslog formats by a line's first character.  rfc3164 starts
# with a month name, rfc3339 with a year, rfc5424 with ``<PRI>`` or ``1 ``.
_AUTO: Dict[str, Tuple[Splitter, ...]] = {
    "<": (_SPLITTERS["rfc5424"],),
    **{c: (_SPLITTERS["rfc3164"],) for c in "ADFJMNOS"},
    **{c: (_SPLITTERS["rfc3339"], _SPLITTERS["rfc5424"]) for c in "0123456789"},
}


def _auto(line: str, now: float) -> Optional[Envelope]:
    for split in _AUTO.get(line[:1], ()):
        envelope = split(line, now)
        if envelope is not None:
            return envelope
    return None


# Time conversion is most of an envelope's cost, and a busy log repeats the
# same second thousands of times: every conversion below is cached on the
# text up to the second (plus the local zone where local time is involved)
# and the fraction is added exactly as datetime.timestamp() would.
_CACHE = 4096


def _bsd_match_time(match: re.Match, now: float) -> Optional[float]:
    return _bsd_time(match.group("mon"), match.group("day"), match.group("hms"), now)


def _bsd_time(mon: str, day: str, hms: str, now: float) -> Optional[float]:
    month = _MONTHS.get(mon)
    if month is None:
        return None
    year = _year_of(int(now))
    for candidate in (year, year - 1):
        stamp = _mktime(candidate, month, day, hms, time.tzname)
        if stamp is None:
            return None
        if stamp <= now + 86400:
            return stamp
    return None


@functools.lru_cache(maxsize=64)
def _year_of(now: int) -> int:
    return time.localtime(now).tm_year


def _dated(match: re.Match) -> Optional[float]:
    month = _MONTHS.get(match.group("mon"))
    if month is None:
        return None
    year = int(match.group("year"))
    return _mktime(year, month, match.group("day"), match.group("hms"), time.tzname)


@functools.lru_cache(maxsize=_CACHE)
def _mktime(year: int, month: int, day: str, hms: str, _zone: object) -> Optional[float]:
    hour, minute, second = (int(x) for x in hms.split(":"))
    if not (1 <= int(day) <= 31 and hour < 24 and minute < 60 and second < 61):
        return None
    try:
        return time.mktime((year, month, int(day), hour, minute, second, 0, 0, -1))
    except (OverflowError, ValueError):
        return None


def _local_time(text: str) -> Optional[float]:
    base = _local_base(text[:19], time.tzname)
    if base is None or len(text) <= 20:
        return base
    # naive datetime.timestamp(): whole local seconds + microseconds / 1e6
    return base + int(text[20:26].ljust(6, "0")) / 1e6


@functools.lru_cache(maxsize=_CACHE)
def _local_base(text: str, _zone: object) -> Optional[float]:
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except (ValueError, OverflowError):
        return None


@functools.lru_cache(maxsize=_CACHE)
def _iso_base(second: str, zone: str) -> Optional[float]:
    """Seconds of an ISO stamp without fraction (``T`` or blank; ``Z`` or offset)."""
    if zone == "Z":
        zone = "+00:00"
    elif ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    try:
        return dt.datetime.fromisoformat(second.replace(" ", "T", 1) + zone).timestamp()
    except (ValueError, OverflowError):
        return None
