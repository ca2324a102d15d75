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

It does not read logs, decide whether an address may relay or change the
grant table (:mod:`popbsmtp.policy` does all three); it only computes *until
when*, reading the table to know what it set itself, and it never asks to
shorten a grant it did not set (a manual ``add`` or a longer grant from
another rule stays as it is).  Open sessions are not part
of the saved state: after a restart the service caps restored grants to
``grace`` (fail closed), and a still-open session needs a new login.

Memory and time: open sessions are kept in flat arrays
(:mod:`popbsmtp.policy.opensessions`), about 70 bytes each, under an id that is a
60-bit hash: no string key and no object per session.  Two ids that hash
alike are treated as one id reused: the older session ends there (fail
closed), none is ever held longer.  Sessions older than ``max_session`` leave
from the head of the queue, so the work per login is O(1) amortised however
many sessions are open.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Tuple

from popbsmtp.grants import GrantTable
from popbsmtp.parse.matcher import Login
from popbsmtp.policy.opensessions import PRUNE_EVERY, OpenSessions
from popbsmtp.profiles import AUTH, CONNECT, LOGIN, LOGOUT, Profile, registry

log = logging.getLogger(__name__)

# A session id is hash((profile, kind, id)) cut to 60 bits (a 32-byte int;
# kind "ip", "session" or "pid").  str hashes are salted per process, so a
# collision cannot be aimed at, and it only ends a session early.
SID_BITS = (1 << 60) - 1
# A session's logout can reach the log before its login (Dovecot's log process
# writes the login and the mail process's lines as they arrive): a logout of an
# unknown session id is remembered this long, and a login of that id then gets
# only grace.  Bounded, oldest dropped first.
EARLY_LOGOUT_WINDOW = 60.0
MAX_EARLY_LOGOUTS = 4096
__all__ = ["PRUNE_EVERY", "Release", "SessionStats", "SessionTracker"]


_make = tuple.__new__  # a named tuple without its generated __new__: a third of the cost


class Release(NamedTuple):
    """A session ended: ``ip`` may relay until ``until``; ``exact`` when that may
    shorten its grant (the hold being ended was this tracker's own)."""

    ip: str
    until: float
    exact: bool


@dataclass
class SessionStats:
    opened: int = 0
    closed: int = 0  # by a logout, or by its id reused
    unknown_logouts: int = 0
    expired: int = 0  # forgotten at max_session
    early_logouts: int = 0  # logged before their login, which then got only grace
    server_ended: int = 0  # ended by their server's start-up or shutdown line
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
        # In log order: start order up to clock skew between hosts, which at
        # worst delays forgetting a session by that skew.
        self._open = OpenSessions()
        self._floor: Dict[str, float] = {}  # untracked grants seen while sessions were open
        self._early: Dict[int, float] = {}  # session ids logged out before their login
        self._connects: Dict[Tuple[str, str], Tuple[Login, float]] = {}
        self._connect_heap: List[Tuple[float, str, str]] = []

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
                heapq.heappush(self._connect_heap, (login.time, login.profile, login.session))
                self._tick(login.time)
            return None
        if login.event == AUTH:
            found = self._connects.pop((login.profile, login.session or ""), None)
            if found is None or login.time - found[1] > self.max_session:
                self.stats.unjoined += 1
                return None
            self.stats.joined += 1
            peer = found[0]
            return login._replace(event=LOGIN, ip=peer.ip, raw_ip=peer.raw_ip, invalid=peer.invalid)
        return login

    # -- sessions ----------------------------------------------------------

    def tracked(self, login: Login) -> bool:
        return (login.profile, login.rule) in self._kinds

    def window(self, login: Login) -> float:
        """How long after its time a login may still be granted."""
        return self.max_session if self.tracked(login) else self.grace

    def window_of(self, profile: str, rule: str) -> float:
        """:meth:`window` for a grant's rule (no event at hand)."""
        return self.max_session if (profile, rule) in self._kinds else self.grace

    def login(
        self, login: Login, now: float, table: GrantTable
    ) -> Tuple[float, List[Release], bool]:
        """Record a (granted) login: the expiry its grant should have, the
        sessions it ended (a reused id), to be released first, and whether the
        grant is held while its session is open (not one whose logout was
        logged before it)."""
        ip = login.ip
        assert ip is not None
        start = min(login.time, now)
        kind = self._kinds.get((login.profile, login.rule))
        sid = self._sid(login, kind)
        ended_at = self._early.pop(sid, None) if sid is not None and self._early else None
        if ended_at is not None and start - ended_at <= EARLY_LOGOUT_WINDOW:
            self.stats.early_logouts += 1
            sid = None  # the session is over: no hold, only grace
        if sid is None:
            if self._open.holds(ip):
                self._floor[ip] = max(self._floor.get(ip, 0.0), start + self.grace)
            return start + self.grace, [], False
        self._tick(now)
        ended: List[Release] = []
        # A reused process (Cyrus) or id: the previous session ended here.  Only
        # kind "ip" keeps several sessions under one id, all of one address.
        while self._open.open(sid, ip, start, several=kind == "ip") is not None:
            release = self._end(sid, start, table)
            if release is not None:
                ended.append(release)
        self.stats.opened += 1
        return start + self.max_session, ended, self.max_session > self.grace

    def logout(self, login: Login, now: float, table: GrantTable) -> Optional[Release]:
        """Close the session ``login`` ends: whose grace started, until when."""
        kind = self._kinds.get((login.profile, login.rule))
        sid = self._sid(login, kind)
        release = None if sid is None else self._end(sid, min(login.time, now), table)
        if release is None:
            self.stats.unknown_logouts += 1
            if sid is not None and kind == "session":  # ids are never reused, unlike pids
                if len(self._early) >= MAX_EARLY_LOGOUTS:
                    del self._early[next(iter(self._early))]
                self._early[sid] = min(login.time, now)
        return release

    def server_event(self, event: Login, now: float, table: GrantTable) -> List[Release]:
        """A server logged its start-up or shutdown: its sessions are over, logged
        or not, so every open session ends and its grace starts here.

        Every session, not only that server's: session ids do not say which
        server opened them.  On a host with several servers, the others' clients
        get their grace early (fail closed).
        """
        ended = min(event.time, now)
        released = []
        for sid in self._open.open_ids():
            release = self._end(sid, ended, table)
            if release is not None:
                released.append(release)
        self.stats.server_ended += len(released)
        return released

    @staticmethod
    def _sid(login: Login, kind: Optional[str]) -> Optional[int]:
        if kind is None:
            return None
        ident = login.ip if kind == "ip" else login.session
        return None if ident is None else hash((login.profile, kind, ident)) & SID_BITS

    def _end(self, sid: int, ended: float, table: GrantTable) -> Optional[Release]:
        """Close the oldest session of ``sid`` at ``ended``; what its address gets."""
        closed = self._open.close(sid)
        if closed is None:
            return None
        self.stats.closed += 1
        ip = closed.address
        hold = 0.0 if closed.latest is None else closed.latest + self.max_session
        # The expiry this tracker set for the address: the hold of its newest
        # open session, the one just closed among them.
        held = max(hold, closed.start + self.max_session)
        # What its remaining sessions (``hold``) and the grace need.
        target = max(ended + self.grace, self._floor.get(ip, 0.0), hold)
        if not hold:  # no session of the address is left open
            self._floor.pop(ip, None)
        expires = table.expiry(ip)
        # Shorten only a hold that was ours; anything else may only grow.
        exact = expires is not None and expires == held and target < expires
        return _make(Release, (ip, target, exact))

    def _tick(self, now: float) -> None:
        """Forget sessions and connects older than ``max_session`` (bounded memory)."""
        limit = now - self.max_session
        for ip in self._open.expire(limit):
            self.stats.expired += 1
            if ip in self._floor and not self._open.holds(ip):
                self._floor.pop(ip, None)
        if self._connect_heap:
            self._expire_connects(limit)

    def _expire_connects(self, limit: float) -> None:
        heap = self._connect_heap
        while heap and heap[0][0] <= limit:
            _, profile, session = heapq.heappop(heap)
            found = self._connects.get((profile, session))
            if found is not None and found[1] <= limit:
                del self._connects[(profile, session)]

    def open_sessions(self) -> int:
        return len(self._open)

    def queued(self) -> int:
        """Queue entries held (open sessions and closed ones not yet dropped)."""
        return self._open.queued()
