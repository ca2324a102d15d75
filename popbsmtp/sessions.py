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

Memory and time: an open session is one entry in each of two dicts (its id
as a 60-bit hash -> its address; the address -> its queue position) and one
slot in the queue (id and start time, in a list and an array of doubles): no
string key and no tuple per session, about 170 bytes.  Two ids that hash
alike are treated as one id reused: the older session ends there (fail
closed), none is ever held longer.  Sessions older than ``max_session`` leave
from the head of the queue, so the work per login is O(1) amortised however
many sessions are open.
"""

from __future__ import annotations

import heapq
import logging
from array import array
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Union

from popbsmtp.grants import GrantTable
from popbsmtp.matcher import Login
from popbsmtp.profiles import AUTH, CONNECT, LOGIN, LOGOUT, Profile, registry

log = logging.getLogger(__name__)

# A session id is hash((profile, kind, id)) cut to 60 bits (a 32-byte int;
# kind "ip", "session" or "pid").  str hashes are salted per process, so a
# collision cannot be aimed at, and it only ends a session early.
SID_BITS = (1 << 60) - 1
# Closed sessions stay in the queue until they reach its head; the queue is
# rebuilt without them once they outnumber the open sessions by this many.
PRUNE_EVERY = 1000
# Aged-out queue entries are cut off its front in one go once this many.
QUEUE_TRIM = 4096


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
        self._open: Dict[int, str] = {}  # session id -> address
        # address -> queue position of its open session, or a list of them, oldest first
        self._held: Dict[str, Union[int, List[int]]] = {}
        self._repeats: Dict[int, int] = {}  # id -> open sessions beyond one (kind "ip")
        # The queue: every session opened, in log order (start order up to clock
        # skew between hosts, which at worst delays forgetting a session by that
        # skew).  Position p is index p - _base; a closed session's id is None.
        self._sids: List[Optional[int]] = []
        self._starts = array("d")
        self._base = 0
        self._head = 0  # index of the first entry not aged out yet
        self._count = 0  # open sessions (several per id of kind "ip")
        self._floor: Dict[str, float] = {}  # untracked grants seen while sessions were open
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

    def login(self, login: Login, now: float, table: GrantTable) -> float:
        """Record a (granted) login; return the expiry its grant should have."""
        assert login.ip is not None
        start = min(login.time, now)
        kind = self._kinds.get((login.profile, login.rule))
        sid = self._sid(login, kind)
        if sid is None:
            if login.ip in self._held:
                self._floor[login.ip] = max(self._floor.get(login.ip, 0.0), start + self.grace)
            return start + self.grace
        self._tick(now)
        ip = self._open.get(sid)
        # A reused process (Cyrus) or id: the previous session ended here.  Only
        # kind "ip" keeps several sessions under one id, all of one address.
        while ip is not None and (kind != "ip" or ip != login.ip):
            self._end(sid, ip, start, table, login)
            ip = self._open.get(sid)
        self._add(sid, login.ip, start)
        self.stats.opened += 1
        return start + self.max_session

    def logout(self, login: Login, now: float, table: GrantTable) -> Optional[str]:
        """Close the session ``login`` ends; return the address whose grace started."""
        sid = self._sid(login, self._kinds.get((login.profile, login.rule)))
        ip = None if sid is None else self._open.get(sid)
        if sid is None or ip is None:
            self.stats.unknown_logouts += 1
            return None
        return self._end(sid, ip, min(login.time, now), table, login)

    @staticmethod
    def _sid(login: Login, kind: Optional[str]) -> Optional[int]:
        if kind is None:
            return None
        ident = login.ip if kind == "ip" else login.session
        return None if ident is None else hash((login.profile, kind, ident)) & SID_BITS

    def _add(self, sid: int, ip: str, start: float) -> None:
        """Open a session of ``sid`` for ``ip`` at the tail of the queue."""
        pos = self._base + len(self._sids)
        self._sids.append(sid)
        self._starts.append(start)
        self._count += 1
        held = self._held.get(ip)
        if held is None:
            self._held[ip] = pos
            self._open[sid] = ip
            return
        first = held[0] if isinstance(held, list) else held
        kept = self._sids[first - self._base]
        assert kept is not None
        ip = self._open[kept]  # the str already kept, not a second copy of it
        if isinstance(held, list):
            held.append(pos)
        else:
            self._held[ip] = [held, pos]
        if sid in self._open:
            self._repeats[sid] = self._repeats.get(sid, 0) + 1
        else:
            self._open[sid] = ip

    def _close(self, sid: int, ip: str, pos: Optional[int] = None) -> None:
        """End the session at ``pos``, or the oldest of ``sid``, of address ``ip``."""
        held = self._held[ip]
        base, sids = self._base, self._sids
        if isinstance(held, list):
            if pos is None:
                pos = next(p for p in held if sids[p - base] == sid)
            held.remove(pos)
            if len(held) == 1:
                self._held[ip] = held[0]
        else:
            pos = held
            del self._held[ip]
        sids[pos - base] = None
        repeats = self._repeats.get(sid, 0)
        if repeats > 1:
            self._repeats[sid] = repeats - 1
        elif repeats:
            del self._repeats[sid]
        else:
            del self._open[sid]
        self.stats.closed += 1
        self._count -= 1

    def _end(self, sid: int, ip: str, ended: float, table: GrantTable, login: Login) -> str:
        """Close the oldest session of ``sid`` at ``ended`` and settle its address."""
        # The expiry this tracker set for the address: the hold of its newest
        # open session (sessions leave oldest first, so no older one is higher).
        held = self._hold_of(ip)
        self._close(sid, ip)
        self._settle(ip, ended, table, login, held)
        return ip

    def _settle(self, ip: str, ended: float, table: GrantTable, login: Login, held: float) -> None:
        """Set ``ip``'s grant to what its remaining sessions and grace need."""
        target = max(ended + self.grace, self._floor.get(ip, 0.0), self._hold_of(ip))
        grant = table.get(ip)
        if ip not in self._held:
            self._floor.pop(ip, None)
        if grant is None:
            return  # refused, expired or removed by request: nothing to extend
        if grant.expires == held and target < grant.expires:
            table.remove(ip)  # the hold was ours: shorten it to the grace
        table.grant(ip, target, login.profile, login.rule)

    def _hold_of(self, ip: str) -> float:
        held = self._held.get(ip)
        if held is None:
            return 0.0
        starts, base = self._starts, self._base
        if isinstance(held, list):
            return max(starts[p - base] for p in held) + self.max_session
        return starts[held - base] + self.max_session

    def _tick(self, now: float) -> None:
        """Forget sessions and connects older than ``max_session`` (bounded memory)."""
        limit = now - self.max_session
        sids, starts = self._sids, self._starts
        head, end = self._head, len(sids)
        while head < end and starts[head] <= limit:
            sid = sids[head]
            if sid is not None:  # else closed by its logout
                ip = self._open[sid]
                self.stats.expired += 1
                self._close(sid, ip, self._base + head)
                if ip not in self._held:
                    self._floor.pop(ip, None)
            head += 1
        self._head = head
        if head >= QUEUE_TRIM and 2 * head >= end:
            del sids[:head], starts[:head]
            self._base += head
            self._head = 0
        if end - head > 2 * self._count + PRUNE_EVERY:
            self._compact()
        self._expire_connects(limit)

    def _compact(self) -> None:
        """Rebuild the queue from the open sessions: drops entries of closed ones."""
        sids, starts, base = self._sids, self._starts, self._base
        # New positions above every old one, so none is mistaken for another.
        fresh = base + len(sids)
        kept: List[Optional[int]] = []
        kept_starts = array("d")
        for index in range(self._head, len(sids)):
            sid = sids[index]
            if sid is None:
                continue
            pos = fresh + len(kept)
            ip = self._open[sid]
            held = self._held[ip]
            if isinstance(held, list):
                held[held.index(base + index)] = pos
            else:
                self._held[ip] = pos
            kept.append(sid)
            kept_starts.append(starts[index])
        self._sids, self._starts, self._base, self._head = kept, kept_starts, fresh, 0

    def _expire_connects(self, limit: float) -> None:
        heap = self._connect_heap
        while heap and heap[0][0] <= limit:
            _, profile, session = heapq.heappop(heap)
            found = self._connects.get((profile, session))
            if found is not None and found[1] <= limit:
                del self._connects[(profile, session)]

    def open_sessions(self) -> int:
        return self._count

    def queued(self) -> int:
        """Queue entries held (open sessions and closed ones not yet dropped)."""
        return len(self._sids) - self._head
