"""Value types for configuration options: each parses text or raises ValueError.

The messages are what the administrator reads after ``file:line: key:``.
"""

from __future__ import annotations

import re
from typing import Callable, List

from popbsmtp.maps import MapSpec
from popbsmtp.parse.envelope import FORMATS

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``1h``, ``1h30m`` → seconds (must be > 0)."""
    text = text.strip().lower()
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        total = float(text)
    else:
        parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)([smhd])", text)
        if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
            raise ValueError(f"{text!r} is not a duration (use e.g. 90s, 30m, 1h, 1h30m)")
        total = sum(float(n) * _UNITS[u] for n, u in parts)
    if total <= 0:
        raise ValueError("a duration must be greater than zero")
    return total


def format_duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def positive_int(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


def absolute_path(text: str) -> str:
    text = text.strip()
    if not text.startswith("/"):
        raise ValueError(f"{text!r} is not an absolute path")
    if "\0" in text:
        raise ValueError("a path cannot contain NUL")
    return text


def word_list(text: str) -> List[str]:
    words = [w for w in re.split(r"[\s,]+", text.strip()) if w]
    if not words:
        raise ValueError("needs at least one name")
    return words


def map_spec(text: str) -> MapSpec:
    try:
        return MapSpec.parse(text)
    except Exception as exc:  # ConfigError from MapSpec.parse
        raise ValueError(str(exc)) from None


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
        raise ValueError(f"{text!r} is not an octal mode such as 0644") from None
    if mode & 0o022 or mode & ~0o777:
        raise ValueError(f"mode {mode:04o} is group/world-writable or has special bits")
    return mode


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        text = text.strip().lower()
        if text not in allowed:
            raise ValueError(f"{text!r} is not one of: {', '.join(allowed)}")
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
        raise ValueError(f"{value!r} is not auto, syslog, stderr or an absolute file path")
    return absolute_path(value)


log_format = choice(*FORMATS)
log_level = choice("debug", "info", "warning", "error")
