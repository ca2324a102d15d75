"""Open sessions: which session holds which address since when, in flat arrays.

:mod:`popbsmtp.policy.sessions` decides what a login or a logout means; this is
where its open sessions are kept.  When every grant is also an open session
(a Dovecot server whose users stay connected) this is most of the daemon's
memory, so it holds no Python object per session:

- the queue: every session opened, in log order, as four parallel columns:
  its id (a 60-bit hash), its start, its address (the string the grant table
  already holds, shared), and the position of the same address's next older
  open session.  Position ``p`` is index ``p - base``; positions only grow,
  so the front can be cut off without renumbering anything.
- two hash tables of positions (open addressing, linear probing, at most
  half full): id -> its newest open session, address -> its newest open
  session.  They store no keys: a slot's key is read back from the queue.
  Each is split by hash into ``SHARDS`` small tables that grow on their
  own, so growing moves a few thousand entries, never all of them: no
  pause of the core loop (one big table would pause it while it grows).

That is about half of what two dicts with an int object per id and per
position take (``bench/sessions.py`` measures it; docs/benchmarks.md has
the figures), and no dict resize pauses the loop.  All open sessions of one
id have one address (the tracker ends an id's sessions before reusing it for
another), so the address chain also finds every session of an id.
"""

from __future__ import annotations

import sys
from array import array
from typing import List, NamedTuple, Optional, Sequence, Tuple

EMPTY = -1
# Closed sessions stay in the queue until they reach its front; the queue is
# rebuilt without them once they outnumber the open sessions by this many.
PRUNE_EVERY = 4096
# Aged-out queue entries are cut off its front in one go once this many.
QUEUE_TRIM = 4096
# Shards per hash table, picked by bits of the hash above any shard's mask.
SHARDS = 256
SHARD_SHIFT = 40


_make = tuple.__new__  # a named tuple without its generated __new__: a third of the cost


class Closed(NamedTuple):
    """A session just ended."""

    address: str
    start: float
    latest: Optional[float]  # newest start among the address's sessions still open


_FREE = array("q", [EMPTY])


class _Table:
    """Slots of queue positions; ``EMPTY`` marks a free slot."""

    __slots__ = ("slots", "mask", "used")

    def __init__(self, size: int = 8) -> None:
        self.slots = _FREE * size
        self.mask = size - 1
        self.used = 0


def _shards(count: int = 0) -> List[_Table]:
    """A sharded table sized for ``count`` keys."""
    size = 8
    while size < 2 * (count // SHARDS) + 2:
        size *= 2
    return [_Table(size) for _ in range(SHARDS)]


class OpenSessions:
    """The open sessions in start order, found by id and by address."""

    __slots__ = (
        "_sids", "_starts", "_ips", "_older", "_base", "_head", "_count", "_by_sid", "_by_ip"
    )  # fmt: skip

    def __init__(self) -> None:
        self._sids = array("q")
        self._starts = array("d")
        self._ips: List[Optional[str]] = []  # None once the session is closed
        self._older = array("q")  # the address's next older open session, or EMPTY
        self._base = 0
        self._head = 0  # index of the first entry not aged out yet
        self._count = 0
        self._by_sid = _shards()
        self._by_ip = _shards()

    def __len__(self) -> int:
        return self._count

    def queued(self) -> int:
        """Queue entries held (open sessions and closed ones not yet dropped)."""
        return len(self._sids) - self._head

    def footprint(self) -> int:
        """Bytes held by the queue and the tables (not the shared address strings)."""
        parts: List[object] = [self._sids, self._starts, self._ips, self._older]
        parts += [shard.slots for shard in self._by_sid + self._by_ip]
        return sum(sys.getsizeof(part) for part in parts)

    # -- lookups ---------------------------------------------------------

    def address(self, sid: int) -> Optional[str]:
        """The address ``sid``'s open sessions hold, or None if it has none."""
        pos = self._find(self._by_sid, self._sids, sid)[2]
        return None if pos == EMPTY else self._ips[pos - self._base]

    def holds(self, ip: str) -> bool:
        return self._count > 0 and self._find(self._by_ip, self._ips, ip)[2] != EMPTY

    def latest_start(self, ip: str) -> Optional[float]:
        """When the newest open session of ``ip`` started, or None if it has none."""
        return self._latest(self._find(self._by_ip, self._ips, ip)[2])

    def _latest(self, pos: int) -> Optional[float]:
        """The newest start along the address chain from ``pos``."""
        if pos == EMPTY:
            return None
        base, starts, older = self._base, self._starts, self._older
        # Positions follow log order, not always start order (clock skew).
        latest = starts[pos - base]
        pos = older[pos - base]
        while pos != EMPTY:
            latest = max(latest, starts[pos - base])
            pos = older[pos - base]
        return latest

    def open_ids(self) -> List[int]:
        """The id of every open session, oldest first (an id once per session)."""
        sids, ips = self._sids, self._ips
        return [sids[i] for i in range(self._head, len(sids)) if ips[i] is not None]

    # -- changes ---------------------------------------------------------

    def open(self, sid: int, ip: str, start: float, several: bool = False) -> Optional[str]:
        """Add a session of ``sid`` holding ``ip`` at the tail of the queue.

        Unless ``sid`` has open sessions already, of another address or (if
        not ``several``) at all: then nothing is opened and their address is
        returned, for the caller to end them first.
        """
        base, sids, ips = self._base, self._sids, self._ips
        sid_table, sid_slot, newest = self._find(self._by_sid, sids, sid)
        if newest != EMPTY:
            held = ips[newest - base]
            assert held is not None
            if not several or held != ip:
                return held
        ip_table, ip_slot, newest = self._find(self._by_ip, ips, ip)
        if newest != EMPTY:
            ip = ips[newest - base] or ip  # the string already kept, not a second copy
        pos = base + len(ips)
        sids.append(sid)
        self._starts.append(start)
        ips.append(ip)
        self._older.append(newest)
        self._count += 1
        self._put(ip_table, ips, ip_slot, pos)
        self._put(sid_table, sids, sid_slot, pos)
        return None

    def close(self, sid: int) -> Optional[Closed]:
        """End the oldest open session of ``sid``; None if it has none."""
        table, slot, pos = self._find(self._by_sid, self._sids, sid)
        if pos == EMPTY:
            return None
        base, sids, older = self._base, self._sids, self._older
        oldest, pos = pos, older[pos - base]
        while pos != EMPTY:
            if sids[pos - base] == sid:
                oldest, slot = pos, EMPTY  # not the one the id's slot points at
            pos = older[pos - base]
        ip, start = self._ips[oldest - base], self._starts[oldest - base]
        assert ip is not None
        rest = self._close_at(oldest, None if slot == EMPTY else (table, slot))
        return _make(Closed, (ip, start, self._latest(rest)))

    def expire(self, limit: float) -> Sequence[str]:
        """End the sessions started at or before ``limit``, oldest first; their addresses.

        Also where the queue sheds closed entries: called on every tracked login.
        """
        sids, starts, ips = self._sids, self._starts, self._ips
        head = self._head
        due = head < len(sids) and (starts[head] <= limit or ips[head] is None)
        if not due and len(sids) - head <= 2 * self._count + PRUNE_EVERY:  # not _untidy()
            return ()  # the usual case, kept cheap
        gone: List[str] = []
        # Closed entries never hold up the front, as if compacted away already.
        while self._head < len(sids):
            ip = ips[self._head]
            if ip is not None:
                if starts[self._head] > limit:
                    break
                self._close_at(self._base + self._head)
                gone.append(ip)
            self._head += 1
        self._tidy()
        return gone

    def _close_at(self, pos: int, sid_at: Optional[Tuple[_Table, int]] = None) -> int:
        """End the session at ``pos``; return its address's newest open session left, or EMPTY.

        ``sid_at``: the id's shard and slot, when known to point at ``pos``.
        """
        base, sids, ips, older = self._base, self._sids, self._ips, self._older
        index = pos - base
        sid, ip, next_older = sids[index], ips[index], older[index]
        assert ip is not None
        # Out of the address's chain.
        table, slot, rest = self._find(self._by_ip, ips, ip)
        if rest == pos:
            self._replace(table, ips, slot, next_older)
            rest = next_older
        else:
            newer = rest
            while older[newer - base] != pos:
                newer = older[newer - base]
            older[newer - base] = next_older
        # The id's newest session, if that was this one, is its next older one.
        if sid_at is None:
            sid_table, sid_slot, newest = self._find(self._by_sid, sids, sid)
        else:
            (sid_table, sid_slot), newest = sid_at, pos
        if newest == pos:
            while next_older != EMPTY and sids[next_older - base] != sid:
                next_older = older[next_older - base]
            self._replace(sid_table, sids, sid_slot, next_older)
        ips[index] = None
        self._count -= 1
        return rest

    def _tidy(self) -> None:
        """Cut the aged-out front; rebuild without closed entries once they pile up."""
        head, end = self._head, len(self._sids)
        if head >= QUEUE_TRIM and 2 * head >= end:
            for column in (self._sids, self._starts, self._ips, self._older):
                del column[:head]
            self._base += head
            self._head = 0
        if self._untidy():
            self._compact()

    def _untidy(self) -> bool:
        return len(self._sids) - self._head > 2 * self._count + PRUNE_EVERY

    def _compact(self) -> None:
        """Open every open session again, in order, in a fresh queue."""
        sids, starts, ips, head = self._sids, self._starts, self._ips, self._head
        count = self._count
        # New positions above every old one, so none is mistaken for another.
        self._base += len(sids)
        self._sids, self._starts, self._ips, self._older = array("q"), array("d"), [], array("q")
        self._head = self._count = 0
        self._by_sid, self._by_ip = _shards(count), _shards(count)
        for index in range(head, len(sids)):
            ip = ips[index]
            if ip is not None:
                self.open(sids[index], ip, starts[index], several=True)

    # -- the hash tables ---------------------------------------------------

    def _find(
        self, shards: List[_Table], column: Sequence[object], key: object
    ) -> Tuple[_Table, int, int]:
        """(shard, slot, position) of ``key``'s newest session; position EMPTY if none."""
        code = hash(key)
        table = shards[(code >> SHARD_SHIFT) & (len(shards) - 1)]
        slots, mask, base = table.slots, table.mask, self._base
        slot = code & mask
        while True:
            pos = slots[slot]
            if pos == EMPTY or column[pos - base] == key:
                return table, slot, pos
            slot = (slot + 1) & mask

    def _put(self, table: _Table, column: Sequence[object], slot: int, pos: int) -> None:
        """Point ``slot`` of ``table`` (found by :meth:`_find`) at ``pos``; grow at half full."""
        slots = table.slots
        if slots[slot] == EMPTY:
            table.used += 1
        slots[slot] = pos
        if 2 * table.used > len(slots):
            self._grow(table, column)

    def _replace(self, table: _Table, column: Sequence[object], slot: int, pos: int) -> None:
        """Point ``slot`` at another session of its key, or free it if ``pos`` is EMPTY."""
        if pos != EMPTY:
            table.slots[slot] = pos
            return
        # Free the slot by shifting back the entries after it whose probe
        # passed through it (no tombstones, so lookups never slow down).
        slots, mask, base = table.slots, table.mask, self._base
        hole = slot
        while True:
            slot = (slot + 1) & mask
            moved = slots[slot]
            if moved == EMPTY:
                break
            home = hash(column[moved - base]) & mask
            # It stays if its home lies cyclically in (hole, slot].
            if (hole < home <= slot) if hole <= slot else (home > hole or home <= slot):
                continue
            slots[hole] = moved
            hole = slot
        slots[hole] = EMPTY
        table.used -= 1

    def _grow(self, table: _Table, column: Sequence[object]) -> None:
        old = table.slots
        table.slots = slots = array("q", [EMPTY]) * (2 * len(old))
        table.mask = mask = len(slots) - 1
        base = self._base
        for pos in old:
            if pos != EMPTY:
                slot = hash(column[pos - base]) & mask
                while slots[slot] != EMPTY:
                    slot = (slot + 1) & mask
                slots[slot] = pos
