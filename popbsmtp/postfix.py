"""What the local Postfix says about itself, asked through ``postconf``.

Supported table types (``postconf -m``), parameters (``postconf -xh``, with
``$name`` expanded), the smtpd services in ``master.cf`` and their ``-o``
overrides (``postconf -F`` / ``-P``), all optionally for another instance's
configuration directory (``-c DIR``).  This module only reads: it never
edits ``main.cf`` or ``master.cf`` (``doctor --fix-hint`` prints commands).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from popbsmtp.errors import PopbsmtpError

TIMEOUT = 30


class PostfixError(PopbsmtpError):
    """postconf/postmap is missing or failed; the message says what to install."""


def find_tool(name: str) -> Optional[str]:
    """A Postfix tool by name; /usr/sbin is searched too (not in every PATH)."""
    found = shutil.which(name)
    if found is None and os.access(f"/usr/sbin/{name}", os.X_OK):
        found = f"/usr/sbin/{name}"
    return found


def _postconf(config_dir: Optional[str], *args: str) -> str:
    tool = find_tool("postconf")
    if tool is None:
        raise PostfixError("Postfix's postconf is not installed (install the postfix package)")
    cmd = [tool]
    if config_dir:
        cmd += ["-c", config_dir]
    try:
        result = subprocess.run(
            [*cmd, *args], capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PostfixError(f"running postconf failed: {exc}") from None
    if result.returncode != 0:
        raise PostfixError(f"postconf {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


@functools.lru_cache(maxsize=8)
def supported_types(config_dir: Optional[str] = None) -> Tuple[str, ...]:
    """Table types this Postfix can read (``postconf -m``), sorted."""
    return tuple(sorted(_postconf(config_dir, "-m").split()))


def parameter(name: str, config_dir: Optional[str] = None) -> str:
    """A main.cf parameter with ``$name`` references expanded (``postconf -xh``)."""
    return _postconf(config_dir, "-xh", name).strip()


def restriction_list(value: str) -> List[str]:
    """Split a restriction list the way Postfix does: on commas and whitespace."""
    return [word for word in re.split(r"[\s,]+", value) if word]


@dataclass(frozen=True)
class SmtpdService:
    """One smtpd entry of master.cf and the parameters it overrides with ``-o``."""

    name: str  # service/type as postconf prints it, e.g. "submission/inet"
    overrides: Dict[str, str]


def smtpd_services(config_dir: Optional[str] = None) -> List[SmtpdService]:
    """Every master.cf service that runs smtpd, with its ``-o`` overrides expanded."""
    names = []
    for line in _postconf(config_dir, "-F").splitlines():
        match = re.fullmatch(r"(\S+/\S+)/command = (\S+).*", line)
        if match and os.path.basename(match.group(2)) == "smtpd":
            names.append(match.group(1))
    overrides: Dict[str, Dict[str, str]] = {name: {} for name in names}
    for line in _postconf(config_dir, "-Px").splitlines():
        match = re.fullmatch(r"(\S+/\S+)/(\w+) = ?(.*)", line)
        if match and match.group(1) in overrides:
            overrides[match.group(1)][match.group(2)] = match.group(3).strip()
    return [SmtpdService(name, overrides[name]) for name in names]


def check_config_dir(config_dir: Optional[str]) -> None:
    """Fail early, with a clear message, when ``-c DIR`` has no main.cf."""
    if config_dir and not os.path.isfile(os.path.join(config_dir, "main.cf")):
        raise PostfixError(f"{config_dir} has no main.cf; -c must name a Postfix config directory")
