"""Sessions: keep a client authorized while its POP/IMAP session is open.

For servers that log the end of a session (Dovecot by session id, Courier
and UW by address, Cyrus by process id), a login *opens* a session that
holds its address in the grant table until the logout, and the ``grace``
period starts at the logout.  A session whose logout is never logged (a
lost line, a crash, syslog filtering) is held at most ``max_session`` after
its last login, so a lost logout can never grant forever.  A server without
logout lines is unaffected: its logins get the plain ``grace``.

This module also joins the two-line forms (popa3d, old vm-pop3d, spop3d): a
``connect`` event names the address of a process, a later ``auth`` event of
the same process says the login succeeded; :meth:`SessionTracker.resolve`
turns the pair into one login.  Neither line alone grants anything.

It does not read logs or decide whether an address may relay
(:func:`popbsmtp.grants.refusal` does); it only computes *until when*, and
it never shortens a grant it did not set itself (a manual ``add`` or a
longer grant from another rule stays as it is).  Open sessions are not part
of the saved state: after a restart the service caps restored grants to
``grace`` (fail closed), and a still-open session needs a new login.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

from popbsmtp.grants import GrantTable
from popbsmtp.matcher import Login
from popbsmtp.profiles import AUTH, CONNECT, LOGIN, LOGOUT, Profile, registry

log = logging.getLogger(__name__)

Key = Tuple[str, str, str]  # (profile, kind, id): kind is "ip", "session" or "pid"
PRUNE_EVERY = 1000


@dataclass
class _Open:
    ip: str
    starts: List[float] = field(default_factory=list)  # one per open session (kind "ip": many)


@dataclass
class SessionStats:
    opened: int = 0
    closed: int = 0
    unknown_logouts: int = 0
    expired: int = 0
    joined: int = 0
    unjoined: int = 0


class SessionTracker:
    """Open sessions and pending two-line connects; owned by the core loop."""

    def __init__(
        self, grace: float, max_session: float, profiles: Optional[List[Profile]] = None
    ) -> None:
        self.grace = grace
        self.max_session = max(max_session, grace)
        self.stats = SessionStats()
        self._kinds: Dict[Tuple[str, str], str] = {}
        for profile in profiles if profiles is not None else registry().values():
            self._learn(profile)
        self._open: Dict[Key, _Open] = {}
        self._by_ip: Dict[str, Set[Key]] = {}
        self._held: Dict[str, float] = {}  # expiry this tracker set, per address
        self._floor: Dict[str, float] = {}  # untracked grants seen while sessions were open
        self._connects: Dict[Tuple[str, str], Tuple[Login, float]] = {}
        self._calls = 0

    def _learn(self, profile: Profile) -> None:
        ends = {r.session for r in profile.rules if r.event == LOGOUT and r.session}
        for rule in profile.rules:
            if rule.event in (LOGIN, LOGOUT) and rule.session in ends:
                self._kinds[(profile.name, rule.name)] = rule.session or ""

    # -- two-line forms -------------------------------------------------

    def resolve(self, login: Login) -> Optional[Login]:
        """The event to act on: None for a connect, a login for a joined auth."""
        if login.event == CONNECT:
            if login.session is not None:
                self._connects[(login.profile, login.session)] = (login, login.time)
                self._tick(login.time)
            return None
        if login.event == AUTH:
            found = self._connects.pop((login.profile, login.session or ""), None)
            if found is None or login.time - found[1] > self.max_session:
                self.stats.unjoined += 1
                return None
            self.stats.joined += 1
            peer = found[0]
            return dataclasses.replace(
                login, event=LOGIN, ip=peer.ip, raw_ip=peer.raw_ip, invalid=peer.invalid
            )
        return login

    # -- sessions ----------------------------------------------------------

    def tracked(self, login: Login) -> bool:
        return (login.profile, login.rule) in self._kinds

    def window(self, login: Login) -> float:
        """How long after its time a login may still be granted."""
        return self.max_session if self.tracked(login) else self.grace

    def login(self, login: Login, now: float, table: GrantTable) -> float:
        """Record a (granted) login; return the expiry its grant should have."""
        assert login.ip is not None
        start = min(login.time, now)
        key = self._key(login)
        if key is None:
            if self._by_ip.get(login.ip):
                self._floor[login.ip] = max(self._floor.get(login.ip, 0.0), start + self.grace)
            return start + self.grace
        self._tick(now)
        entry = self._open.get(key)
        if entry is not None and key[1] != "ip":
            # A reused process (Cyrus) or id: the previous session ended here.
            self._settle(self._close(key, entry, start), start, table, login)
            entry = None
        if entry is None:
            entry = self._open[key] = _Open(login.ip)
            self._by_ip.setdefault(login.ip, set()).add(key)
        entry.starts.append(start)
        self.stats.opened += 1
        hold = start + self.max_session
        self._held[login.ip] = max(self._held.get(login.ip, 0.0), hold)
        return hold

    def logout(self, login: Login, now: float, table: GrantTable) -> Optional[str]:
        """Close the session ``login`` ends; return the address whose grace started."""
        key = self._key(login)
        entry = self._open.get(key) if key is not None else None
        if key is None or entry is None:
            self.stats.unknown_logouts += 1
            return None
        ended = min(login.time, now)
        ip = self._close(key, entry, ended)
        self._settle(ip, ended, table, login)
        return ip

    def _key(self, login: Login) -> Optional[Key]:
        kind = self._kinds.get((login.profile, login.rule))
        if kind is None:
            return None
        ident = login.ip if kind == "ip" else login.session
        return None if ident is None else (login.profile, kind, ident)

    def _close(self, key: Key, entry: _Open, _ended: float) -> str:
        entry.starts.pop(0)
        self.stats.closed += 1
        if not entry.starts:
            del self._open[key]
            keys = self._by_ip.get(entry.ip, set())
            keys.discard(key)
            if not keys:
                self._by_ip.pop(entry.ip, None)
        return entry.ip

    def _settle(self, ip: str, ended: float, table: GrantTable, login: Login) -> None:
        """Set ``ip``'s grant to what its remaining sessions and grace need."""
        target = max(ended + self.grace, self._floor.get(ip, 0.0), self._hold_of(ip))
        grant = table.get(ip)
        held = self._held.get(ip)
        if not self._by_ip.get(ip):
            self._held.pop(ip, None)
            self._floor.pop(ip, None)
        else:
            self._held[ip] = self._hold_of(ip)
        if grant is None:
            return  # refused, expired or removed by request: nothing to extend
        if held is not None and grant.expires == held and target < grant.expires:
            table.remove(ip)  # the hold was ours: shorten it to the grace
        table.grant(ip, target, login.profile, login.rule)

    def _hold_of(self, ip: str) -> float:
        starts = [s for key in self._by_ip.get(ip, ()) for s in self._open[key].starts]
        return max(starts) + self.max_session if starts else 0.0

    def _tick(self, now: float) -> None:
        """Forget sessions and connects older than ``max_session`` (bounded memory)."""
        self._calls += 1
        if self._calls % PRUNE_EVERY:
            return
        limit = now - self.max_session
        for key, entry in list(self._open.items()):
            while entry.starts and entry.starts[0] <= limit:
                self.stats.expired += 1
                self._close(key, entry, limit)
        for ip in [ip for ip in self._held if not self._by_ip.get(ip)]:
            self._held.pop(ip, None)
            self._floor.pop(ip, None)
        for pid, (_, when) in list(self._connects.items()):
            if when <= limit:
                del self._connects[pid]

    def open_sessions(self) -> int:
        return sum(len(entry.starts) for entry in self._open.values())
