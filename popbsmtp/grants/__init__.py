"""The grant table: which client address may relay until when.

This is the truth the Postfix map is projected from.  It records its own
pending changes (keys to add to / delete from the map) so the writer only
touches what changed, and keeps a heap of expiry times so the reaper knows
exactly when the next entry falls due.  It does not read logs or write maps.

Compact on purpose (a busy site keeps a six-figure number of grants): per
address one float in ``_expires``, one slot in the list of its expiry bucket
and, unless its rule is the first one the table saw, one small int in
``_who`` (an index into the table's short list of (profile, rule) pairs); no
object per grant.  Expiry order: a grant is filed under its
expiry time in whole ``BUCKET`` seconds; only the earliest bucket is turned
into a heap of exact (expires, address) pairs when it becomes due, so expiry
stays exact while the table holds no tuple per grant.
"""

from __future__ import annotations

import heapq
import logging
import time
from array import array
from typing import Dict, Iterable, Iterator, KeysView, List, NamedTuple, Optional, Set, Tuple

log = logging.getLogger(__name__)

# Width of an expiry bucket in seconds.  Wide enough that a bucket is a list
# of many addresses even at 24-hour grace (5,400 buckets), narrow enough that
# the exact heap built from the earliest one stays small.
BUCKET = 16.0
_FAR = 1e15  # beyond any real expiry (year 31,000,000)
_LAST = int(_FAR // BUCKET) + 1
_FIRST = -_LAST - 1
# Every extension files the address again (a client polling every 5 minutes
# under a 24-hour session hold leaves 288 stale entries a day): the schedule
# is rebuilt once stale entries outnumber the grants by this many.
REBUILD_SLACK = 4096


_make = tuple.__new__  # a named tuple without its generated __new__: a third of the cost


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


class GrantTable:
    """Grants by Postfix key, with pending map changes and an expiry schedule."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._expires: Dict[str, float] = {}
        self._who: Dict[str, int] = {}  # index into _rules; absent means 0 (most sites)
        self._rules: List[Tuple[str, str]] = []
        self._rule_ids: Dict[str, Dict[str, int]] = {}  # rule -> profile -> index
        # Expiry schedule: addresses by bucket (expiry // BUCKET), a heap of the
        # bucket numbers, and the exact heap of the buckets up to ``_near_bucket``.
        # Entries go stale when a grant changes; they are checked against
        # ``_expires`` when they come up, as in a plain lazy-deletion heap.
        self._buckets: Dict[int, List[str]] = {}
        self._bucket_heap: List[int] = []
        self._near: List[Tuple[float, str]] = []
        self._near_bucket = _FIRST
        self._entries = 0  # in buckets and _near, stale ones included
        self._added: Set[str] = set()
        self._removed: Set[str] = set()
        # Kept grants whose expiry moved; tracked once take_retimed() was called.
        self._retimed: Optional[Set[str]] = None
        self.refused_full = 0
        self._full_streak = 0  # refusals since the table last had room (log throttling)

    def __len__(self) -> int:
        return len(self._expires)

    def __contains__(self, ip: str) -> bool:
        return ip in self._expires

    def __iter__(self) -> Iterator[Grant]:
        """Every grant; the table may change meanwhile (a grant removed is skipped).

        Over a copy of the keys only (8 bytes a grant), not of the grants.
        """
        expires = self._expires
        for ip in list(expires):
            at = expires.get(ip)
            if at is not None:
                yield self._view(ip, at)

    def get(self, ip: str) -> Optional[Grant]:
        expires = self._expires.get(ip)
        return None if expires is None else self._view(ip, expires)

    def expiry(self, ip: str) -> Optional[float]:
        """When ``ip``'s grant expires, or None: :meth:`get` without the snapshot."""
        return self._expires.get(ip)

    def _view(self, ip: str, expires: float) -> Grant:
        profile, rule = self._rules[self._who.get(ip, 0)]
        return _make(Grant, (ip, expires, profile, rule))  # Grant without its __new__: cheaper

    def _rule_id(self, profile: str, rule: str) -> int:
        # By rule name, then profile: two lookups of strings whose hashes are
        # kept, cheaper than hashing a new (profile, rule) tuple every time.
        of_rule = self._rule_ids.get(rule)
        if of_rule is None:
            of_rule = self._rule_ids[rule] = {}
        found = of_rule.get(profile)
        if found is None:
            found = of_rule[profile] = len(self._rules)
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
                self._move(ip, expires, profile, rule)
            return True
        if len(self._expires) >= self.max_entries:
            self._refuse_full(ip)
            return False
        self._full_streak = 0
        self._expires[ip] = expires
        self._set_rule(ip, profile, rule)
        self._schedule(ip, expires)
        self._removed.discard(ip)
        self._added.add(ip)
        return True

    def set_expiry(self, ip: str, expires: float, profile: str, rule: str) -> bool:
        """Set a grant's expiry exactly, shorter or longer (a grant that is not
        there is added); False when refused (full).  The map sees no change for
        an address that stays granted."""
        if ip not in self._expires:
            return self.grant(ip, expires, profile, rule)
        self._move(ip, expires, profile, rule)
        return True

    def _move(self, ip: str, expires: float, profile: str, rule: str) -> None:
        """A granted address's new expiry and rule, filed for expiry (no map change)."""
        self._expires[ip] = expires
        if self._retimed is not None:
            self._retimed.add(ip)
        self._set_rule(ip, profile, rule)
        self._schedule(ip, expires)

    def _schedule(self, ip: str, expires: float) -> None:
        self._entries += 1
        if self._entries > 2 * len(self._expires) + REBUILD_SLACK:
            self._rebuild()  # files ``ip`` too
            return
        number = int(expires // BUCKET) if -_FAR < expires < _FAR else _bucket(expires)
        if number <= self._near_bucket:
            heapq.heappush(self._near, (expires, ip))
            return
        bucket = self._buckets.get(number)
        if bucket is None:
            self._buckets[number] = [ip]
            heapq.heappush(self._bucket_heap, number)
        else:
            bucket.append(ip)

    def _load_bucket(self) -> bool:
        """Move the earliest bucket into the exact heap; False when none is left."""
        if not self._bucket_heap:
            return False
        number = heapq.heappop(self._bucket_heap)
        expires, near = self._expires, self._near
        bucket = self._buckets.pop(number)
        before = len(near)
        for ip in bucket:
            at = expires.get(ip)
            if at is not None and _bucket(at) == number:  # else filed elsewhere since
                near.append((at, ip))
        self._entries -= len(bucket) - (len(near) - before)
        heapq.heapify(near)
        self._near_bucket = number
        return True

    def _rebuild(self) -> None:
        """File every grant once again, dropping the stale entries."""
        self._buckets = {}
        self._bucket_heap.clear()
        self._near.clear()
        self._near_bucket, self._entries = _FIRST, 0
        for ip, expires in self._expires.items():
            self._schedule(ip, expires)

    def _refuse_full(self, ip: str) -> None:
        """Count a refusal; log the 1st, 10th, 100th ... of each full spell.

        Logarithmic, not per event: a flood of forged logins must not be able
        to fill the disk with warnings.
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
        self._buckets.clear()
        self._bucket_heap.clear()
        self._near.clear()
        self._entries = 0
        return count

    def expire(self, now: float) -> List[str]:
        """Drop every grant whose expiry is ``<= now``; return their keys."""
        gone: List[str] = []
        near = self._near
        while True:
            # Everything in ``_near`` is due before anything still in a bucket.
            while near and near[0][0] <= now:
                expires, ip = heapq.heappop(near)
                self._entries -= 1
                if self._expires.get(ip) == expires:
                    self.remove(ip)
                    gone.append(ip)
            if near or not self._bucket_heap or self._bucket_heap[0] * BUCKET > now:
                return gone
            self._load_bucket()

    def next_expiry(self) -> Optional[float]:
        """When the earliest grant falls due (stale entries are dropped)."""
        near = self._near
        while True:
            while near:
                expires, ip = near[0]
                if self._expires.get(ip) == expires:
                    return expires
                heapq.heappop(near)
                self._entries -= 1
            if not self._load_bucket():
                return None

    def _note(self, ip: str, *, added: bool) -> None:
        if added:
            self._removed.discard(ip)
            self._added.add(ip)
        else:
            self._added.discard(ip)
            self._removed.add(ip)

    def scheduled(self) -> int:
        """Entries in the expiry schedule, stale ones included (bounded: see _rebuild)."""
        return self._entries

    def pending(self) -> int:
        """How many map changes :meth:`take_changes` would hand out now."""
        return len(self._added) + len(self._removed)

    def take_changes(self) -> Tuple[Set[str], Set[str]]:
        """Keys to add to and delete from the map since the last call."""
        added, removed = self._added, self._removed
        self._added, self._removed = set(), set()
        return added, removed

    def take_retimed(self) -> Dict[str, float]:
        """Expiries set or moved since the last call, pending additions included.

        For a table that answers at lookup time (socketmap): it must know
        an extension even though the map's key set did not change.  Call it
        before :meth:`take_changes`; moves are tracked from the first call
        on (a full reconcile covers what came before).
        """
        moved = self._added if self._retimed is None else self._retimed | self._added
        self._retimed = set()
        expires = self._expires
        return {ip: expires[ip] for ip in moved if ip in expires}

    def keys(self) -> KeysView[str]:
        """The granted keys: a live view, not a copy (1,000,000 keys are 40 MB as a set)."""
        return self._expires.keys()

    def frozen_rows(self) -> Iterator[Tuple[str, float, str, str]]:
        """The grants as they are now, as state rows, to be read later or elsewhere.

        For a snapshot written on another thread (:mod:`popbsmtp.grants.saver`):
        copies of the keys and expiries (16 bytes a grant) taken at once,
        rows made from them as they are read.
        """
        keys, expires = list(self._expires), array("d", self._expires.values())
        return _rows(zip(keys, expires), list(self._rules), dict(self._who))

    def iter_rows(self) -> Iterator[Tuple[str, float, str, str]]:
        """The grants as state rows, one at a time (a snapshot streams them)."""
        return _rows(self._expires.items(), self._rules, self._who)


def _rows(
    expiries: Iterable[Tuple[str, float]], rules: List[Tuple[str, str]], who: Dict[str, int]
) -> Iterator[Tuple[str, float, str, str]]:
    """State rows from (address, expiry) pairs and the rule of each address."""
    for ip, expires in expiries:
        profile, rule = rules[who.get(ip, 0)]
        yield (ip, expires, profile, rule)


def when(stamp: float) -> str:
    """An expiry as people read it (log lines, ``list``, the demo): local date and time."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def _bucket(expires: float) -> int:
    """The number of the ``BUCKET``-second span ``expires`` falls in."""
    if not -_FAR < expires < _FAR:  # infinite or NaN: the first or last bucket
        return -_LAST if expires < 0 else _LAST
    return int(expires // BUCKET)
