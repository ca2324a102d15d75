"""A front's grants: a mirror of the shared table's unexpired rows, with a freshness deadline.

On an SMTP host running as a socketmap front (``grants_from = pgsql:FILE``),
the POP/IMAP hosts' policy has already decided every grant; the mirror holds
key → latest expiry over all hosts' rows and publishes it to the socketmap
writer, which checks each expiry at lookup time.  The mirror can miss a
withdrawal only while it does not hear from the database, so every answer it
gets extends how long the snapshot may be trusted (``stale_after`` from when
the question was asked), and nothing else does: a lost connection simply
lets the deadline run out, after which every lookup gets TEMP until a full
re-read.  It never writes the database, and knows nothing about SQL.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable, Collection, Dict, Mapping, Protocol

log = logging.getLogger(__name__)


class Published(Protocol):
    """What the mirror publishes to: the socketmap writer (maps/socketmap.py)."""

    def retime(self, expiries: Mapping[str, float]) -> None: ...

    def apply(self, add: Collection[str], remove: Collection[str]) -> None: ...

    def replace(self, keys: Collection[str]) -> None: ...

    def confirm(self, until: float) -> None: ...


class Mirror:
    """Key → expiry as the database last said, and until when that may be answered.

    Confined to the feed's thread; the socketmap server only sees what is
    published.  ``monotonic`` is injectable (tests use a fake clock).
    """

    def __init__(
        self,
        target: Published,
        stale_after: float,
        max_entries: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.stale_after = stale_after
        self.max_entries = max_entries
        self.monotonic = monotonic
        self.expiries: Dict[str, float] = {}
        self.synced = False  # a full read happened since the last loss
        self.syncs = 0
        self.updates = 0
        self.refused = 0  # keys left out because the mirror was full
        self._until = -math.inf
        target.confirm(-math.inf)  # nothing is known yet: TEMP, not NOTFOUND

    def fresh_until(self) -> float:
        """Until when (monotonic) lookups are answered from the mirror."""
        return self._until

    def load(self, rows: Mapping[str, float], asked_at: float) -> None:
        """A full read that started at ``asked_at`` (monotonic): the mirror becomes it."""
        wanted = self._bounded({k.lower(): v for k, v in rows.items()}, {})
        self.target.retime(wanted)
        self.target.replace(wanted)
        self.expiries = wanted
        self.synced = True
        self.syncs += 1
        self.confirm(asked_at)

    def update(self, asked: Collection[str], rows: Mapping[str, float], asked_at: float) -> None:
        """A read of the keys ``asked`` (the others are unchanged); absent ones are gone."""
        if not self.synced:
            return  # a full read comes first; this one proves nothing about the rest
        found = {k.lower(): v for k, v in rows.items()}
        gone = [k for k in (a.lower() for a in asked) if k not in found and k in self.expiries]
        found = self._bounded(found, self.expiries)
        if found:
            self.target.retime(found)
            self.target.apply(list(found), ())
            self.expiries.update(found)
        if gone:
            self.target.apply((), gone)
            for key in gone:
                del self.expiries[key]
        self.updates += 1
        self.confirm(asked_at)

    def confirm(self, asked_at: float) -> None:
        """The database answered a question asked at ``asked_at``: nothing older was missed."""
        if not self.synced:
            return
        until = asked_at + self.stale_after
        if until > self._until:
            self._until = until
            self.target.confirm(until)

    def lost(self) -> None:
        """The connection is gone: no more confirmations until the next full read.

        What is held stays answerable until the deadline already given, which
        is at most ``stale_after`` after the database last answered.
        """
        self.synced = False

    def _bounded(self, rows: Dict[str, float], held: Mapping[str, float]) -> Dict[str, float]:
        """``rows`` less new keys beyond ``max_entries`` (logged: those clients get NOTFOUND)."""
        room = self.max_entries - len(held)
        new = [k for k in rows if k not in held]
        if len(new) <= room:
            return rows
        dropped = set(new[max(room, 0) :])
        self.refused += len(dropped)
        log.warning(
            "the mirror holds at most max_entries = %d clients; %d more are not answered",
            self.max_entries,
            len(dropped),
        )
        return {k: v for k, v in rows.items() if k not in dropped}

    def statistics(self) -> Dict[str, object]:
        left = self._until - self.monotonic()
        return {
            "mirrored": len(self.expiries),
            "full_reads": self.syncs,
            "partial_reads": self.updates,
            "refused_full": self.refused,
            "fresh_for": round(left, 3) if math.isfinite(left) else None,
        }
