"""Value types for configuration options: each parses text or raises ValueError.

The messages are what the administrator reads after ``file:line: key:``.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Callable, List, Mapping

from popbsmtp.maps import MapSpec, known_types
from popbsmtp.parse.envelope import FORMATS

if TYPE_CHECKING:
    from popbsmtp.profiles import JournalTrust

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Every number is bounded: a grace of 400 nines would be infinity, and the
# first expiry computed from it an OverflowError at every start.
MAX_DURATION = 30 * 86400.0  # grace, max_session, poll_interval, add --for
MAX_WHOLE = 10_000_000  # max_entries, max_line_length
MAX_PATH = 4096  # PATH_MAX
_SHOWN = 40  # characters of a bad value quoted back in a message


def shown(text: str) -> str:
    """``text`` quoted for an error message, cut short: a message never echoes a file."""
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "...")


def duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``1h``, ``1h30m``, ``2d`` → seconds (> 0, at most 30 days)."""
    text = text.strip().lower()
    if len(text) > 64:
        raise ValueError(f"{shown(text)} is too long for a duration (at most 30d)")
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        total = float(text)
    else:
        parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)([smhd])", text)
        if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
            raise ValueError(f"{shown(text)} is not a duration (use e.g. 90s, 30m, 1h, 1h30m)")
        total = sum(float(n) * _UNITS[u] for n, u in parts)
    if total <= 0:
        raise ValueError("a duration must be greater than zero")
    if not math.isfinite(total) or total > MAX_DURATION:
        raise ValueError(f"{shown(text)} is longer than the most allowed, 30d")
    return total


def bounded_duration(low: float, high: float) -> Callable[[str], float]:
    """A :func:`duration` between ``low`` and ``high`` seconds."""

    def parse(text: str) -> float:
        seconds = duration(text)
        if not low <= seconds <= high:
            span = f"{format_duration(low)} to {format_duration(high)}"
            raise ValueError(f"{shown(text.strip())} is outside {span}")
        return seconds

    parse.__name__ = "bounded_duration"
    return parse


def grants_from(text: str) -> str:
    """``log``, or ``pgsql:/absolute/path`` of a pgsql_table(5) file (a socketmap front)."""
    text = text.strip()
    if text.lower() == "log":
        return "log"
    if text.startswith("pgsql:"):
        return "pgsql:" + absolute_path(text[len("pgsql:") :])
    raise ValueError(f"{shown(text)} is not log or pgsql:/path/to/popbsmtp-pgsql.cf")


def format_duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def positive_int(text: str) -> int:
    text = text.strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,20}", text):  # ASCII digits: int() takes others too
        raise ValueError(f"{shown(text)} is not a whole number")
    value = int(text)
    if value <= 0:
        raise ValueError("must be greater than zero")
    if value > MAX_WHOLE:
        raise ValueError(f"{value} is more than the most allowed, {MAX_WHOLE}")
    return value


def absolute_path(text: str) -> str:
    text = text.strip()
    if not text.startswith("/"):
        raise ValueError(f"{shown(text)} is not an absolute path")
    if "\0" in text:
        raise ValueError("a path cannot contain NUL")
    if len(text.encode("utf-8", "surrogateescape")) >= MAX_PATH:
        raise ValueError(f"the path is longer than {MAX_PATH - 1} bytes")
    return text


def path_or_auto(text: str) -> str:
    return "auto" if text.strip().lower() == "auto" else absolute_path(text)


def optional_path(text: str) -> str:
    return absolute_path(text) if text.strip() else ""


def journal_trust(text: str) -> Mapping[str, JournalTrust]:
    from popbsmtp.sources.trust import parse_journal_trust  # imports the profiles

    return parse_journal_trust(text)


def word_list(text: str) -> List[str]:
    words = [w for w in re.split(r"[\s,]+", text.strip()) if w]
    if not words:
        raise ValueError("needs at least one name")
    return words


def map_spec(text: str) -> MapSpec:
    """``TYPE:/path`` of a table type popbsmtp can write (Postfix's own list is
    checked at start, by :func:`popbsmtp.maps.writer_class`)."""
    try:
        spec = MapSpec.parse(text)
    except Exception as exc:  # ConfigError from MapSpec.parse
        if text.strip().startswith("socketmap:"):
            raise ValueError(str(exc)) from None  # says what a socketmap endpoint must be
        raise ValueError(
            f"{shown(text.strip())} is not a Postfix table TYPE:/absolute/path"
        ) from None
    known = known_types()
    if spec.type not in known:
        raise ValueError(
            f"table type {spec.type!r} is not supported; supported: "
            + ", ".join(k for k in known if k != "memory")
        )
    if not spec.served:  # a socketmap endpoint was checked by MapSpec.parse
        absolute_path(spec.path)
    return spec


def map_value(text: str) -> str:
    """The table value: Postfix answers 451 for an empty one."""
    text = text.strip()
    if not text or any(ord(c) < 32 for c in text):
        raise ValueError("the map value must be non-empty text on one line (e.g. OK)")
    return text


def file_mode(text: str) -> int:
    try:
        mode = int(text.strip(), 8)
    except ValueError:
        raise ValueError(f"{shown(text)} is not an octal mode such as 0644") from None
    if mode & 0o022 or mode & ~0o777:
        raise ValueError(f"mode {mode:04o} is group/world-writable or has special bits")
    return mode


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        text = text.strip().lower()
        if text not in allowed:
            raise ValueError(f"{shown(text)} is not one of: {', '.join(allowed)}")
        return text

    parse.__name__ = "choice"
    return parse


def text(value: str) -> str:
    return value.strip()


def log_target(value: str) -> str:
    """``auto``, ``syslog``, ``stderr`` or an absolute path (our own log file)."""
    value = value.strip()
    if value.lower() in ("auto", "syslog", "stderr"):
        return value.lower()
    if not value.startswith("/"):
        raise ValueError(f"{shown(value)} is not auto, syslog, stderr or an absolute file path")
    return absolute_path(value)


log_format = choice(*FORMATS)
log_level = choice("debug", "info", "warning", "error")
