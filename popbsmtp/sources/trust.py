"""Whether a journal entry may speak for the server whose line it carries.

A file written by syslog cannot say who sent a line: any local user's
``logger -t dovecot …`` lands in it like Dovecot's own.  The journal can:
journald stores the sender's uid (from the socket's credentials), its
command name, executable and systemd unit (from the kernel) in fields whose
names start with ``_``, which no sender can set.  Each profile names the
values its server really logs with (:class:`popbsmtp.profiles.JournalTrust`);
``journal_trust`` changes them per profile.  This module parses that option
and answers "trusted or why not"; it reads no journal.
"""

from __future__ import annotations

import pwd
import re
from dataclasses import replace
from types import MappingProxyType
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Set

from popbsmtp.config.values import shown
from popbsmtp.profiles import JournalTrust, Profile, registry

KEYS = {"uid": "users", "comm": "comms", "exe": "exes", "unit": "units"}
_USER = re.compile(r"[0-9]{1,10}|[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")
_COMM = re.compile(r"[!-~]{1,15}")  # the kernel keeps 15 bytes of a command name
_EXE = re.compile(r"/[!-~]{0,4095}")
_UNIT = re.compile(r"\*|[A-Za-z0-9:_.\\@-]{1,256}")
_CHECKS = {"uid": _USER, "comm": _COMM, "exe": _EXE, "unit": _UNIT}
MAX_PROFILES = 64


class Sender(NamedTuple):
    """journald's fields for who sent an entry; None where the entry has none."""

    uid: Optional[int]
    comm: Optional[str]
    exe: Optional[str]
    unit: Optional[str]

    def describe(self) -> str:
        parts = [f"_UID={self.uid}", f"_COMM={self.comm}", f"_EXE={self.exe}"]
        if self.unit is not None:
            parts.append(f"_SYSTEMD_UNIT={self.unit}")
        return " ".join(parts)


def parse_journal_trust(text: str) -> Mapping[str, JournalTrust]:
    """``dovecot:uid=0,comm=log|dovecot; cyrus:uid=cyrus`` → trust per profile.

    Each ``KEY=V1|V2`` replaces that field of the profile's default (keys:
    uid, comm, exe, unit); fields not named keep the default.  A profile
    without a default must name uid and comm or exe.  ValueError names the
    part that is wrong.
    """
    found: Dict[str, JournalTrust] = {}
    parts = [p.strip() for p in text.split(";") if p.strip()]
    if len(parts) > MAX_PROFILES:
        raise ValueError(f"at most {MAX_PROFILES} profiles")
    known = registry()
    for part in parts:
        name, sep, spec = part.partition(":")
        name = name.strip()
        if not sep or not spec.strip():
            raise ValueError(
                f"{shown(part)}: write PROFILE:KEY=VALUE[|VALUE],... (keys: uid, comm, …)"
            )
        if name not in known:
            raise ValueError(f"{shown(name)} is not a profile; known: {', '.join(known)}")
        if name in found:
            raise ValueError(f"profile {name!r} is given twice")
        found[name] = _one(name, spec, known[name].journal)
    return MappingProxyType(found)


def _one(name: str, spec: str, default: Optional[JournalTrust]) -> JournalTrust:
    fields: Dict[str, tuple] = {}
    for item in spec.split(","):
        key, sep, values = (s.strip() for s in item.partition("="))
        key = key.lower()
        if key not in KEYS or not sep:
            raise ValueError(f"{name}: {shown(item.strip())}: use uid=, comm=, exe= or unit=")
        if KEYS[key] in fields:
            raise ValueError(f"{name}: {key}= is given twice")
        words = tuple(v.strip() for v in values.split("|"))
        for word in words:
            if not _CHECKS[key].fullmatch(word):
                raise ValueError(f"{name}: {key}={shown(word)} is not a valid {key}")
        fields[KEYS[key]] = words
    if default is None:
        if "users" not in fields or not ({"comms", "exes"} & set(fields)):
            raise ValueError(f"{name} has no journal default: give uid= and comm= or exe=")
        default = JournalTrust(users=(), comms=())
    return replace(default, **fields)


def _uid(word: str) -> Optional[int]:
    if word.isdigit():
        return int(word)
    try:
        return pwd.getpwnam(word).pw_uid
    except KeyError:
        return None  # no such user here: that name trusts nobody


class _Resolved(NamedTuple):
    uids: Set[int]
    comms: Set[str]
    exes: Set[str]
    units: Optional[Set[str]]  # None: any unit


class TrustCheck:
    """The effective trust of each selected profile, user names resolved once."""

    def __init__(self, profiles: Iterable[Profile], overrides: Mapping[str, JournalTrust]):
        self._by_profile: Dict[str, _Resolved] = {}
        self.untrusted_profiles: List[str] = []  # no default, no override: grants nothing
        self.unknown_users: List[str] = []  # named in journal_trust, unknown here
        for profile in profiles:
            trust = overrides.get(profile.name, profile.journal)
            if trust is None:
                self.untrusted_profiles.append(profile.name)
                continue
            uids = set()
            for word in trust.users:
                uid = _uid(word)
                if uid is not None:
                    uids.add(uid)
                elif profile.name in overrides:  # a default may name an absent user
                    self.unknown_users.append(f"{profile.name}:{word}")
            units = None if "*" in trust.units else set(trust.units)
            self._by_profile[profile.name] = _Resolved(
                uids, set(trust.comms), set(trust.exes), units
            )

    def refusal(self, profile: str, sender: Sender) -> Optional[str]:
        """None when ``sender`` may speak for ``profile``, else why not."""
        trust = self._by_profile.get(profile)
        if trust is None:
            return f"no journal trust for profile {profile} (set journal_trust)"
        if sender.uid is None or sender.uid not in trust.uids:
            return f"_UID={sender.uid} is not the server's user"
        if sender.comm not in trust.comms and sender.exe not in trust.exes:
            return f"_COMM={sender.comm} _EXE={sender.exe} is not the server's program"
        if sender.unit is not None and trust.units is not None and sender.unit not in trust.units:
            return f"_SYSTEMD_UNIT={sender.unit} is not the server's unit"
        return None

    def describe(self, profile: str) -> str:
        """The effective trust of one profile, as ``check-config --explain`` shows it."""
        trust = self._by_profile.get(profile)
        if trust is None:
            return "nothing (no default; set journal_trust)"
        units = "any" if trust.units is None else "|".join(sorted(trust.units))
        return (
            f"uid={'|'.join(map(str, sorted(trust.uids))) or 'none'}"
            f" comm={'|'.join(sorted(trust.comms)) or '-'}"
            f" exe={'|'.join(sorted(trust.exes)) or '-'} unit={units}"
        )
