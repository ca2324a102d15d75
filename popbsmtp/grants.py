"""The grant table: which client address may relay until when.

This is the truth the Postfix map is projected from.  It records its own
pending changes (keys to add to / delete from the map) so the writer only
touches what changed, and keeps a heap of expiry times so the reaper knows
exactly when the next entry falls due.  It does not read logs or write maps.

Compact on purpose (100,000 grants must fit in a few MiB): per address one
float in ``_expires`` and, unless its rule is the first one the table saw,
one small int in ``_who`` (an index into the table's short list of
(profile, rule) pairs); no object per grant.
"""

from __future__ import annotations

import heapq
import logging
from typing import Dict, Iterator, List, NamedTuple, Optional, Set, Tuple

from popbsmtp.addresses import IgnoredNetworks
from popbsmtp.matcher import Login

log = logging.getLogger(__name__)


class Grant(NamedTuple):
    """One authorized address, as :meth:`GrantTable.get` and iteration show it.

    A snapshot made on demand: the table itself keeps no object per grant.
    """

    ip: str
    expires: float
    profile: str
    rule: str

    def as_row(self) -> Tuple[str, float, str, str]:
        return (self.ip, self.expires, self.profile, self.rule)


def refusal(login: Login, now: float, grace: float, ignored: IgnoredNetworks) -> Optional[str]:
    """Why ``login`` must not be granted, or None when it may be.

    Shared by the daemon and ``popbsmtp test`` so both tell the same story.
    """
    if login.ip is None:
        return f"invalid address {login.raw_ip!r}: {login.invalid or 'no address'}"
    if login.ip in ignored:
        return "ignored network"
    if login.time + grace <= now:
        return "too old"
    return None


class GrantTable:
    """Grants by Postfix key, with pending map changes and an expiry heap."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._expires: Dict[str, float] = {}
        self._who: Dict[str, int] = {}  # index into _rules; absent means 0 (most sites)
        self._rules: List[Tuple[str, str]] = []
        self._rule_ids: Dict[Tuple[str, str], int] = {}
        self._heap: List[Tuple[float, str]] = []
        self._added: Set[str] = set()
        self._removed: Set[str] = set()
        self.refused_full = 0
        self._full_streak = 0  # refusals since the table last had room (log throttling)

    def __len__(self) -> int:
        return len(self._expires)

    def __contains__(self, ip: str) -> bool:
        return ip in self._expires

    def __iter__(self) -> Iterator[Grant]:
        return iter([self._view(ip, expires) for ip, expires in self._expires.items()])

    def get(self, ip: str) -> Optional[Grant]:
        expires = self._expires.get(ip)
        return None if expires is None else self._view(ip, expires)

    def _view(self, ip: str, expires: float) -> Grant:
        return Grant(ip, expires, *self._rules[self._who.get(ip, 0)])

    def _rule_id(self, profile: str, rule: str) -> int:
        found = self._rule_ids.get((profile, rule))
        if found is None:
            found = self._rule_ids[(profile, rule)] = len(self._rules)
            self._rules.append((profile, rule))
        return found

    def _set_rule(self, ip: str, profile: str, rule: str) -> None:
        found = self._rule_id(profile, rule)
        if found:
            self._who[ip] = found
        else:
            self._who.pop(ip, None)

    def grant(self, ip: str, expires: float, profile: str, rule: str) -> bool:
        """Add or extend a grant; never shortens one.  False when refused (full)."""
        current = self._expires.get(ip)
        if current is not None:
            if expires > current:
                self._expires[ip] = expires
                self._set_rule(ip, profile, rule)
                heapq.heappush(self._heap, (expires, ip))
            return True
        if len(self._expires) >= self.max_entries:
            self._refuse_full(ip)
            return False
        self._full_streak = 0
        self._expires[ip] = expires
        self._set_rule(ip, profile, rule)
        heapq.heappush(self._heap, (expires, ip))
        self._note(ip, added=True)
        return True

    def _refuse_full(self, ip: str) -> None:
        """Count a refusal; log the 1st, 10th, 100th ... of each full spell.

        Logarithmic, not per event: a flood of forged logins must not be able
        to fill the disk with warnings (issue 6).
        """
        self.refused_full += 1
        self._full_streak += 1
        streak = self._full_streak
        if streak == 1:
            log.warning("grant table full (%d entries): not granting %s", self.max_entries, ip)
        elif streak == 10 ** (len(str(streak)) - 1):
            log.warning("grant table still full: %d logins refused so far, latest %s", streak, ip)

    def remove(self, ip: str) -> bool:
        if self._expires.pop(ip, None) is None:
            return False
        self._who.pop(ip, None)
        self._note(ip, added=False)
        return True

    def clear(self) -> int:
        count = len(self._expires)
        for ip in list(self._expires):
            self.remove(ip)
        self._heap.clear()
        return count

    def expire(self, now: float) -> List[str]:
        """Drop every grant whose expiry is ``<= now``; return their keys."""
        gone: List[str] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            expires, ip = heapq.heappop(heap)
            if self._expires.get(ip) == expires:
                self.remove(ip)
                gone.append(ip)
        return gone

    def next_expiry(self) -> Optional[float]:
        """When the earliest grant falls due (stale heap entries are dropped)."""
        heap = self._heap
        while heap:
            expires, ip = heap[0]
            if self._expires.get(ip) == expires:
                return expires
            heapq.heappop(heap)
        return None

    def _note(self, ip: str, *, added: bool) -> None:
        if added:
            self._removed.discard(ip)
            self._added.add(ip)
        else:
            self._added.discard(ip)
            self._removed.add(ip)

    def take_changes(self) -> Tuple[Set[str], Set[str]]:
        """Keys to add to and delete from the map since the last call."""
        added, removed = self._added, self._removed
        self._added, self._removed = set(), set()
        return added, removed

    def keys(self) -> Set[str]:
        return set(self._expires)

    def rows(self) -> List[Tuple[str, float, str, str]]:
        return [self._view(ip, expires).as_row() for ip, expires in self._expires.items()]
