"""Open sessions: which session holds which address since when, in flat arrays.

:mod:`popbsmtp.sessions` decides what a login or a logout means; this is
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

That is 64 to 96 bytes per open session.  Two dicts with an int object per
id and per position took about 150, and grew with a jump of +10 MiB at
87,382 entries.  All open sessions of one id have one address (the tracker
ends an id's sessions before reusing it for another), so the address chain
also finds every session of an id.
"""

from __future__ import annotations

from array import array
from typing import List, Optional, Sequence, Tuple

EMPTY = -1
# Closed sessions stay in the queue until they reach its front; the queue is
# rebuilt without them once they outnumber the open sessions by this many.
PRUNE_EVERY = 1000
# Aged-out queue entries are cut off its front in one go once this many.
QUEUE_TRIM = 4096


class _Table:
    """Slots of queue positions; ``EMPTY`` marks a free slot."""

    __slots__ = ("slots", "mask", "used")

    def __init__(self, size: int = 8) -> None:
        self.slots = array("q", [EMPTY]) * size
        self.mask = size - 1
        self.used = 0


def _table_for(count: int) -> _Table:
    size = 8
    while size < 2 * count + 2:
        size *= 2
    return _Table(size)


class OpenSessions:
    """The open sessions in start order, found by id and by address."""

    def __init__(self) -> None:
        self._sids = array("q")
        self._starts = array("d")
        self._ips: List[Optional[str]] = []  # None once the session is closed
        self._older = array("q")  # the address's next older open session, or EMPTY
        self._base = 0
        self._head = 0  # index of the first entry not aged out yet
        self._count = 0
        self._by_sid = _Table()
        self._by_ip = _Table()

    def __len__(self) -> int:
        return self._count

    def queued(self) -> int:
        """Queue entries held (open sessions and closed ones not yet dropped)."""
        return len(self._sids) - self._head

    # -- lookups ---------------------------------------------------------

    def address(self, sid: int) -> Optional[str]:
        """The address ``sid``'s open sessions hold, or None if it has none."""
        pos = self._find(self._by_sid, self._sids, sid)[1]
        return None if pos == EMPTY else self._ips[pos - self._base]

    def holds(self, ip: str) -> bool:
        return self._find(self._by_ip, self._ips, ip)[1] != EMPTY

    def latest_start(self, ip: str) -> Optional[float]:
        """When the newest open session of ``ip`` started, or None if it has none."""
        pos = self._find(self._by_ip, self._ips, ip)[1]
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

    # -- changes ---------------------------------------------------------

    def open(self, sid: int, ip: str, start: float) -> None:
        """Add a session of ``sid`` holding ``ip`` at the tail of the queue."""
        base, ips = self._base, self._ips
        pos = base + len(ips)
        slot, newest = self._find(self._by_ip, ips, ip)
        if newest != EMPTY:
            ip = ips[newest - base] or ip  # the string already kept, not a second copy
        self._sids.append(sid)
        self._starts.append(start)
        ips.append(ip)
        self._older.append(newest)
        self._count += 1
        self._put(self._by_ip, ips, slot, pos)
        self._put(self._by_sid, self._sids, self._find(self._by_sid, self._sids, sid)[0], pos)

    def close(self, sid: int) -> Optional[Tuple[str, float]]:
        """End the oldest open session of ``sid``: its address and start, or None if none."""
        slot, pos = self._find(self._by_sid, self._sids, sid)
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
        self._close_at(oldest, slot)
        return ip, start

    def expire(self, limit: float) -> Sequence[str]:
        """End the sessions started at or before ``limit``, oldest first; their addresses.

        Also where the queue sheds closed entries: called on every tracked login.
        """
        sids, starts, ips = self._sids, self._starts, self._ips
        if (self._head == len(sids) or starts[self._head] > limit) and not self._untidy():
            return ()  # the usual case, kept cheap
        gone: List[str] = []
        while self._head < len(sids) and starts[self._head] <= limit:
            ip = ips[self._head]
            if ip is not None:  # else closed by its logout
                self._close_at(self._base + self._head)
                gone.append(ip)
            self._head += 1
        self._tidy()
        return gone

    def _close_at(self, pos: int, sid_slot: int = EMPTY) -> None:
        """End the session at ``pos`` (``sid_slot``: its id's slot if it points at ``pos``)."""
        base, sids, ips, older = self._base, self._sids, self._ips, self._older
        index = pos - base
        sid, ip, next_older = sids[index], ips[index], older[index]
        assert ip is not None
        # Out of the address's chain.
        slot, newest = self._find(self._by_ip, ips, ip)
        if newest == pos:
            self._replace(self._by_ip, ips, slot, next_older)
        else:
            while older[newest - base] != pos:
                newest = older[newest - base]
            older[newest - base] = next_older
        # The id's newest session, if that was this one, is its next older one.
        if sid_slot == EMPTY:
            sid_slot, newest = self._find(self._by_sid, sids, sid)
        else:
            newest = pos
        if newest == pos:
            while next_older != EMPTY and sids[next_older - base] != sid:
                next_older = older[next_older - base]
            self._replace(self._by_sid, sids, sid_slot, next_older)
        ips[index] = None
        self._count -= 1

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
        self._by_sid, self._by_ip = _table_for(count), _table_for(count)
        for index in range(head, len(sids)):
            ip = ips[index]
            if ip is not None:
                self.open(sids[index], ip, starts[index])

    # -- the hash tables ---------------------------------------------------

    def _find(self, table: _Table, column: Sequence[object], key: object) -> Tuple[int, int]:
        """(slot, position) of ``key``'s newest session; (its free slot, EMPTY) if none."""
        slots, mask, base = table.slots, table.mask, self._base
        slot = hash(key) & mask
        while True:
            pos = slots[slot]
            if pos == EMPTY or column[pos - base] == key:
                return slot, pos
            slot = (slot + 1) & mask

    def _put(self, table: _Table, column: Sequence[object], slot: int, pos: int) -> None:
        """Point ``slot`` (found by :meth:`_find`) at ``pos``; grow at half full."""
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
