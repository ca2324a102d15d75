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

Memory and time: an open session is one dict entry (a short string key, a
tuple of the address and start times) and one heap entry; sessions older
than ``max_session`` leave through the heap, so the work per login is
O(log n) however many sessions are open.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, List, Optional, Set, Tuple, Union

from popbsmtp.grants import GrantTable
from popbsmtp.matcher import Login
from popbsmtp.profiles import AUTH, CONNECT, LOGIN, LOGOUT, Profile, registry

log = logging.getLogger(__name__)

# "profile\0kind\0id" (kind "ip", "session" or "pid"): one string, not a tuple
# of three, because 100,000 open sessions each keep one.
Key = str
# An open session: (address, start, start, ...); kind "ip" can hold several.
Entry = Tuple[Any, ...]
# Stale queue entries (sessions closed by their logout) are dropped by a
# rebuild once they outnumber the open sessions by this many.
PRUNE_EVERY = 1000


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
        self._open: Dict[Key, Entry] = {}
        self._by_ip: Dict[str, Union[Key, Set[Key]]] = {}  # one key, or a set when several
        # Every session opened, in log order (two deques: 16 bytes a session,
        # not a tuple); log order is start order up to clock skew between hosts,
        # which at worst delays forgetting a session by that skew.
        self._order: Deque[Key] = deque()
        self._starts: Deque[float] = deque()
        self._count = 0  # open sessions (several per key of kind "ip")
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
        key = self._key(login)
        if key is None:
            if login.ip in self._by_ip:
                self._floor[login.ip] = max(self._floor.get(login.ip, 0.0), start + self.grace)
            return start + self.grace
        self._tick(now)
        entry = self._open.get(key)
        if entry is not None and self._kinds[(login.profile, login.rule)] != "ip":
            # A reused process (Cyrus) or id: the previous session ended here.
            self._end(key, entry, start, table, login)
            entry = None
        if entry is None:
            self._open[key] = (login.ip, start)
            self._index(login.ip, key)
        else:
            self._open[key] = entry + (start,)
        self._order.append(key)
        self._starts.append(start)
        self.stats.opened += 1
        self._count += 1
        return start + self.max_session

    def logout(self, login: Login, now: float, table: GrantTable) -> Optional[str]:
        """Close the session ``login`` ends; return the address whose grace started."""
        key = self._key(login)
        entry = self._open.get(key) if key is not None else None
        if key is None or entry is None:
            self.stats.unknown_logouts += 1
            return None
        return self._end(key, entry, min(login.time, now), table, login)

    def _key(self, login: Login) -> Optional[Key]:
        kind = self._kinds.get((login.profile, login.rule))
        if kind is None:
            return None
        ident = login.ip if kind == "ip" else login.session
        return None if ident is None else f"{login.profile}\0{kind}\0{ident}"

    def _index(self, ip: str, key: Key) -> None:
        keys = self._by_ip.get(ip)
        if keys is None:
            self._by_ip[ip] = key
        elif isinstance(keys, set):
            keys.add(key)
        elif keys != key:
            self._by_ip[ip] = {keys, key}

    def _keys_of(self, ip: str) -> Tuple[Key, ...]:
        keys = self._by_ip.get(ip)
        if keys is None:
            return ()
        return tuple(keys) if isinstance(keys, set) else (keys,)

    def _close(self, key: Key, entry: Entry) -> str:
        """End the oldest session of ``key``; return its address."""
        ip = str(entry[0])
        self.stats.closed += 1
        self._count -= 1
        if len(entry) > 2:
            self._open[key] = (ip,) + entry[2:]
            return ip
        del self._open[key]
        keys = self._by_ip.get(ip)
        if isinstance(keys, set):
            keys.discard(key)
            if len(keys) == 1:
                self._by_ip[ip] = next(iter(keys))
        elif keys == key:
            del self._by_ip[ip]
        return ip

    def _end(self, key: Key, entry: Entry, ended: float, table: GrantTable, login: Login) -> str:
        """Close the oldest session of ``key`` at ``ended`` and settle its address."""
        # The expiry this tracker set for the address: the hold of its newest
        # open session (sessions leave oldest first, so no older one is higher).
        held = self._hold_of(str(entry[0]))
        ip = self._close(key, entry)
        self._settle(ip, ended, table, login, held)
        return ip

    def _settle(self, ip: str, ended: float, table: GrantTable, login: Login, held: float) -> None:
        """Set ``ip``'s grant to what its remaining sessions and grace need."""
        target = max(ended + self.grace, self._floor.get(ip, 0.0), self._hold_of(ip))
        grant = table.get(ip)
        if ip not in self._by_ip:
            self._floor.pop(ip, None)
        if grant is None:
            return  # refused, expired or removed by request: nothing to extend
        if grant.expires == held and target < grant.expires:
            table.remove(ip)  # the hold was ours: shorten it to the grace
        table.grant(ip, target, login.profile, login.rule)

    def _hold_of(self, ip: str) -> float:
        starts = [s for key in self._keys_of(ip) for s in self._open[key][1:]]
        return max(starts) + self.max_session if starts else 0.0

    def _tick(self, now: float) -> None:
        """Forget sessions and connects older than ``max_session`` (bounded memory)."""
        limit = now - self.max_session
        order, starts = self._order, self._starts
        while starts and starts[0] <= limit:
            key, _ = order.popleft(), starts.popleft()
            entry = self._open.get(key)
            if entry is not None and entry[1] <= limit:  # else closed by its logout
                self.stats.expired += 1
                ip = self._close(key, entry)
                if ip not in self._by_ip:
                    self._floor.pop(ip, None)
        if len(order) > 2 * self._count + PRUNE_EVERY:
            self._compact()
        self._expire_connects(limit)

    def _compact(self) -> None:
        """Rebuild the queue from the open sessions: drops entries of closed ones."""
        pairs = sorted((s, key) for key, entry in self._open.items() for s in entry[1:])
        self._order = deque(key for _, key in pairs)
        self._starts = deque(s for s, _ in pairs)

    def _expire_connects(self, limit: float) -> None:
        heap = self._connect_heap
        while heap and heap[0][0] <= limit:
            _, profile, session = heapq.heappop(heap)
            found = self._connects.get((profile, session))
            if found is not None and found[1] <= limit:
                del self._connects[(profile, session)]

    def open_sessions(self) -> int:
        return self._count
