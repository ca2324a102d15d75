"""Server profiles: what a successful login (and logout) of each server looks like.

One module per POP/IMAP server, named by the word the administrator writes
in ``profiles =``; each defines ``PROFILE``.  The registry below discovers
them, so adding a server is adding one file.  Rules are short regexes matched
against the syslog *message* (envelope already stripped) with two
placeholders, ``{ip}`` and ``{user}``; they must be anchored at both ends and
take the address from a field the server writes after user text is closed.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from popbsmtp.errors import ConfigError
from popbsmtp.parse.envelope import INVENTED_PROGRAMS

LOGIN = "login"
LOGOUT = "logout"
# Two-line servers (popa3d, old vm-pop3d, spop3d): a CONNECT line names the
# address, a later AUTH line of the same process says the login succeeded;
# :mod:`popbsmtp.policy.sessions` joins them by pid.  Neither alone grants anything.
CONNECT = "connect"
AUTH = "auth"
# The server's own start-up or shutdown line: no address; it may name the
# server's version (a ``(?P<version>…)`` group), which tells the matcher which
# of the profile's login forms is genuine from then on.
SERVER = "server"
EVENTS = (LOGIN, LOGOUT, CONNECT, AUTH, SERVER)

# Candidate address text; postfix_key() decides if it is one host address.
IP = r"(?P<ip>[0-9A-Fa-f:.]{2,45})"
# Bounded so that a hostile name cannot make matching quadratic without limit.
USER = r"(?P<user>.{0,512})"
# The same field as the matcher runs it: not captured (nothing reads the name),
# so the repeat is followed straight by the server's closing text and the
# engine backtracks to that text's first character in one step instead of
# trying the group's end at every character.
USER_UNCAPTURED = r".{0,512}"
# Dotted quad only, for servers that write ``user:address`` or ``address:port``
# where a colon would make an IPv6 class ambiguous.
IP4 = r"(?P<ip>[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})"
# A reverse-DNS name as a server writes it: no blanks, brackets or quotes.
HOSTNAME = r"[A-Za-z0-9._-]{1,255}"


@dataclass(frozen=True)
class Rule:
    """One line shape of one server.

    ``programs`` are syslog tags the rule applies to (``prog`` in
    ``prog[pid]:``); ``needle`` is a literal every matching *raw line*
    contains, searched for by the prefilter before any envelope is parsed: a
    literal of the pattern, or one every program name contains (syslog
    copies the tag into the line verbatim; not for the programs the envelope
    parser invents for servers' own log files).  Choose it rare in Postfix's
    own lines and shared with other rules: every distinct first byte of the
    needles is one more pass over each block.  ``also`` names other literals
    every matching line carries: the matcher searches for one of them
    instead where it shares a pass with the other configured rules (a
    server-event rule can ride on its profile's login pass alone, and on a
    shared word under ``auto``).  ``session`` names how a
    logout is tied to its login: ``"ip"`` when the logout line carries the
    address, ``"session"`` when it carries a ``(?P<session>…)`` group,
    ``"pid"`` when the syslog pid is the only link.  ``pid`` is a shape
    check on the syslog tag: True when genuine lines always carry
    ``prog[pid]:``, False when they never do, None when either occurs.
    ``form`` labels a line shape that only some versions of the server write
    (one of its profile's ``forms``); "" for a shape every version writes.
    """

    name: str
    programs: Tuple[str, ...]
    pattern: str
    needle: str
    event: str = LOGIN
    session: Optional[str] = None
    pid: Optional[bool] = None
    form: str = ""
    also: Tuple[str, ...] = ()
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    # What the matcher runs: ``regex`` with the user field not captured (the
    # same matches, the same other groups).
    match_regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        source = self.pattern.replace("{ip}", IP).replace("{ip4}", IP4).replace("{host}", HOSTNAME)
        flags = re.ASCII | re.DOTALL
        object.__setattr__(self, "regex", re.compile(source.replace("{user}", USER), flags))
        uncaptured = re.compile(source.replace("{user}", USER_UNCAPTURED), flags)
        object.__setattr__(self, "match_regex", uncaptured)
        if self.event not in EVENTS:
            raise ValueError(f"rule {self.name}: event must be one of {', '.join(EVENTS)}")
        if self.session not in (None, "ip", "session", "pid"):
            raise ValueError(f"rule {self.name}: session must be ip, session or pid")
        for needle in self.needles:
            if not _needle_fits(self, needle):
                raise ValueError(
                    f"rule {self.name}: needle {needle!r} is neither in the pattern"
                    " nor in every program name"
                )

    @property
    def needles(self) -> Tuple[str, ...]:
        """Every literal the prefilter may search for this rule, first choice first."""
        return (self.needle, *self.also)

    def accepts_pid(self, pid: Optional[int]) -> bool:
        """The tag shape check: does a line with this syslog pid fit the rule?"""
        return self.pid is None or self.pid == (pid is not None)


def _needle_fits(rule: Rule, needle: str) -> bool:
    if needle in rule.pattern.replace("\\", ""):
        return True
    return all(needle in p and p not in INVENTED_PROGRAMS for p in rule.programs)


@dataclass(frozen=True)
class Example:
    """A real log line and what the profile must make of it.

    ``ip`` is the expected Postfix key, or None for a line that must yield
    nothing (failed login, injection attempt, forgery).
    """

    line: str
    ip: Optional[str]
    rule: Optional[str] = None
    event: str = LOGIN
    note: str = ""


@dataclass(frozen=True)
class JournalTrust:
    """Which journal entries may speak for a server: journald's own fields.

    journald takes ``_UID`` from the sender's socket credentials and
    ``_COMM``, ``_EXE`` and ``_SYSTEMD_UNIT`` from the kernel, so no sender
    can choose them, unlike ``SYSLOG_IDENTIFIER`` and the message.  An entry
    is trusted when its ``_UID`` is one of ``users`` (names or numbers), its
    ``_COMM`` is one of ``comms`` or its ``_EXE`` one of ``exes``, and its
    ``_SYSTEMD_UNIT``, when it has one, is one of ``units`` (``*``: any).
    The uid is the defence: a process may rename its own ``_COMM``, but
    only root or the server's user can send as that user.
    """

    users: Tuple[str, ...]
    comms: Tuple[str, ...]
    exes: Tuple[str, ...] = ()
    units: Tuple[str, ...] = ("*",)


@dataclass(frozen=True)
class Profile:
    """One server.  ``auto=False`` keeps a profile with weak shape checks
    (old formats that forgeries could imitate) out of ``profiles = auto``:
    the administrator must name it.  ``forms``: the version labels of its
    rules' ``form``, oldest first, each the first version that writes it.  ``journal`` says which
    journal entries may speak for it; without it no journal entry grants anything
    until ``journal_trust`` names the server's processes."""

    name: str
    description: str
    rules: Tuple[Rule, ...]
    examples: Tuple[Example, ...]
    auto: bool = True
    journal: Optional[JournalTrust] = None
    forms: Tuple[str, ...] = ()

    def form_of(self, version: str) -> str:
        """The form a server of ``version`` ("2.4" from "v2.4.1") writes: the
        newest form not newer than it; the oldest for anything older."""
        number = _version_key(version)
        found = self.forms[0] if self.forms else ""
        for form in self.forms:
            if _version_key(form) <= number:
                found = form
        return found


def _version_key(text: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"[0-9]{1,6}", text)[:3])


def _discover() -> Dict[str, Profile]:
    found: Dict[str, Profile] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        profile = getattr(module, "PROFILE", None)
        if isinstance(profile, Profile):
            found[profile.name] = profile
    return dict(sorted(found.items()))


_REGISTRY: Optional[Dict[str, Profile]] = None


def registry() -> Dict[str, Profile]:
    """All profiles by name (imported once, on first use)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _discover()
    return _REGISTRY


def select(names: List[str]) -> List[Profile]:
    """Profiles for the ``profiles =`` words; ``auto`` means all of them.

    An unknown name is an error that lists the known ones: no silent fallback.
    """
    known = registry()
    if not names or names == ["auto"]:
        return [profile for profile in known.values() if profile.auto]
    chosen: List[Profile] = []
    for name in names:
        if name == "auto":
            raise ConfigError("'auto' cannot be combined with profile names", key="profiles")
        if name not in known:
            raise ConfigError(
                f"unknown profile {name!r}; known: {', '.join(known)}", key="profiles"
            )
        chosen.append(known[name])
    return chosen
