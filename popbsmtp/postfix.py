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
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from popbsmtp.errors import PopbsmtpError

TIMEOUT = 30
DEFAULT_CONFIG_DIR = "/etc/postfix"


class PostfixError(PopbsmtpError):
    """postconf/postmap is missing or failed; the message says what to install."""


def require_main_cf(config_dir: str) -> None:
    """Fail with what to do when ``config_dir`` holds no ``main.cf``.

    Postfix installed with "No configuration" has none, and every postconf or
    postmap then dies with a bare ``fatal: open .../main.cf``; the admin should
    read why and what to change instead.
    """
    if not os.path.isfile(os.path.join(config_dir, "main.cf")):
        raise PostfixError(
            f"Postfix is not configured: {config_dir} has no main.cf.  Configure Postfix"
            " (Debian: dpkg-reconfigure postfix; or start from"
            " /usr/share/postfix/main.cf.dist), or set postfix_config_dir to the directory"
            " of the Postfix instance popbsmtp serves (postmulti -l lists them)"
        )


def tool_command(name: str, config_dir: str) -> List[str]:
    """``[postconf|postmap, -c, DIR]``: every Postfix tool is asked about one instance."""
    tool = find_tool(name)
    if tool is None:
        raise PostfixError(f"Postfix's {name} is not installed (install the postfix package)")
    require_main_cf(config_dir)
    return [tool, "-c", config_dir]


def find_tool(name: str) -> Optional[str]:
    """A Postfix tool by name; /usr/sbin is searched too (not in every PATH)."""
    found = shutil.which(name)
    if found is None and os.access(f"/usr/sbin/{name}", os.X_OK):
        found = f"/usr/sbin/{name}"
    return found


def _postconf(config_dir: Optional[str], *args: str) -> str:
    cmd = tool_command("postconf", config_dir or DEFAULT_CONFIG_DIR)
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
    chroot: bool = False  # master.cf's chroot column: paths are then inside the queue dir


def smtpd_services(config_dir: Optional[str] = None) -> List[SmtpdService]:
    """Every master.cf service that runs smtpd, with its ``-o`` overrides expanded."""
    names, chrooted = [], set()
    fields = _postconf(config_dir, "-F").splitlines()
    for line in fields:
        match = re.fullmatch(r"(\S+/\S+)/command = (\S+).*", line)
        if match and os.path.basename(match.group(2)) == "smtpd":
            names.append(match.group(1))
    for line in fields:  # "-" means the default: no chroot since Postfix 3.0
        match = re.fullmatch(r"(\S+/\S+)/chroot = y", line.strip())
        if match:
            chrooted.add(match.group(1))
    overrides: Dict[str, Dict[str, str]] = {name: {} for name in names}
    for line in _postconf(config_dir, "-Px").splitlines():
        match = re.fullmatch(r"(\S+/\S+)/(\w+) = ?(.*)", line)
        if match and match.group(1) in overrides:
            overrides[match.group(1)][match.group(2)] = match.group(3).strip()
    return [SmtpdService(name, overrides[name], name in chrooted) for name in names]


# -- restriction lists ---------------------------------------------------

UNAUTH = ("defer_unauth_destination", "reject_unauth_destination")
UNCONDITIONAL = ("permit", "reject", "defer", "defer_if_permit", "defer_if_reject")
DEFAULT_RELAY = ["permit_mynetworks", "permit_sasl_authenticated", "defer_unauth_destination"]


def same_table(word: str, table: str) -> bool:
    """Whether a ``check_client_access`` argument names ``table`` (``proxy:`` allowed)."""
    if word.startswith("proxy:"):
        word = word[len("proxy:") :]
    kind, _, path = word.partition(":")
    want_kind, _, want_path = table.partition(":")
    return kind == want_kind and bool(path) and os.path.normpath(path) == want_path


def check_index(words: List[str], table: str) -> Optional[int]:
    """Where ``check_client_access TABLE`` starts in a restriction list, or None."""
    for i, word in enumerate(words[:-1]):
        if word == "check_client_access" and same_table(words[i + 1], table):
            return i
    return None


def first_of(
    words: List[str], names: Tuple[str, ...], before: Optional[int] = None
) -> Optional[int]:
    """Index of the first restriction in ``names`` (before index ``before``), or None."""
    end = len(words) if before is None else before
    for i, word in enumerate(words[:end]):
        if word in names:
            return i
    return None


def with_check(words: List[str], table: str) -> List[str]:
    """``words`` with ``check_client_access TABLE`` moved where it takes effect:
    before the first unconditional or ``*_unauth_destination`` restriction."""
    words = list(words or DEFAULT_RELAY)
    found = check_index(words, table)
    if found is not None:
        del words[found : found + 2]
    stops = [i for i in (first_of(words, UNAUTH), first_of(words, UNCONDITIONAL)) if i is not None]
    if not stops:
        return [*words, "check_client_access", table, "defer_unauth_destination"]
    at = min(stops)
    return [*words[:at], "check_client_access", table, *words[at:]]


def placement(relay: str, recipient: str, table: str) -> Tuple[str, str]:
    """("OK" | "WARNING" | "ERROR", why) for where ``check_client_access TABLE`` sits.

    smtpd_relay_restrictions runs first (compatibility_level >= 1); only when
    it decides nothing do smtpd_recipient_restrictions decide relaying.
    """
    relay_words = restriction_list(relay)
    words, name = relay_words, "smtpd_relay_restrictions"
    decides = first_of(relay_words, UNAUTH + UNCONDITIONAL)
    if decides is None and check_index(relay_words, table) is None:
        words, name = restriction_list(recipient), "smtpd_recipient_restrictions"
    check = f"check_client_access {table}"
    at = check_index(words, table)
    unauth = first_of(words, UNAUTH)
    if at is None:
        if check_index(restriction_list(recipient), table) is None:
            return "ERROR", f"{check} is not in {name}"
        stop = words[unauth] if unauth is not None else "its own decision"
        return "ERROR", (
            f"{check} is only in smtpd_recipient_restrictions, but {name} runs first and "
            f"stops at {stop}: granted clients get 454 Relay access denied"
        )
    if unauth is not None and unauth < at:
        return "ERROR", f"{check} comes after {words[unauth]} in {name}"
    blocker = first_of(words, UNCONDITIONAL, before=at)
    if blocker is not None:
        return "WARNING", f"{check} in {name} is unreachable after '{words[blocker]}'"
    return "OK", f"{check} is in {name} before the relay decision"


def fix_command(relay: str, table: str, service: Optional[str], config_dir: Optional[str]) -> str:
    """The exact postconf command that puts the check where it takes effect."""
    fixed = with_check(restriction_list(relay), table)
    other = config_dir and os.path.normpath(config_dir) != DEFAULT_CONFIG_DIR
    base = ["postconf", *(["-c", config_dir] if other and config_dir else [])]
    if service is None:
        return shlex.join([*base, "-e", f"smtpd_relay_restrictions = {_render(fixed, ', ')}"])
    # postconf -P refuses whitespace in master.cf values: commas only.
    setting = f"{service}/smtpd_relay_restrictions={_render(fixed, ',')}"
    return shlex.join([*base, "-P", setting])


def _render(words: List[str], sep: str) -> str:
    """Join restrictions, keeping each ``check_*`` with its table argument."""
    items: List[str] = []
    for word in words:
        if items and items[-1].startswith("check_") and ":" in word and ":" not in items[-1]:
            items[-1] += (" " if sep != "," else ",") + word
        else:
            items.append(word)
    return sep.join(items)
