"""Saver: writes state snapshots on a thread of its own, one at a time.

A snapshot of 100,000 grants takes about 0.1 s to write and one of
1,000,000 about 1 s.  Written by the core loop, that is how long a login
arriving meanwhile waits for its grant.  Here the core loop takes the
snapshot's copies in one go (grants and read position of the same moment,
:meth:`popbsmtp.grants.GrantTable.frozen_rows`), hands them over and goes
on reading the log; the save thread serialises and writes them
(:meth:`popbsmtp.grants.state.StateFile.save`, atomic as before).  The GIL is
held for one chunk of rows at a time (a few milliseconds), so the core
loop waits at most that long.

It also paces the snapshots: at most one a ``SAVE_INTERVAL``, and at most
``SAVE_SHARE`` of the time however big the table.  Only one save runs at a
time, and the core loop takes note of its outcome at its next
:meth:`Saver.save`: the thread only writes.  It wakes the core loop when
it is done, so a save that failed or that left changes behind is retried
without waiting for the next line.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, NamedTuple, Optional

from popbsmtp.daemon.signals import signals_to_main_thread
from popbsmtp.grants.state import Snapshot, StateFile

log = logging.getLogger(__name__)

SAVE_INTERVAL = 1.0
# A big table takes a while to snapshot (100k grants ~0.15 s): save at most
# this share of the time.  Safe, because the position is saved with the
# grants: after a crash the log is re-read from it.
SAVE_SHARE = 0.01


class Saved(NamedTuple):
    """The outcome of one save: when its snapshot was taken, how long it took."""

    taken: float
    seconds: float
    error: Optional[Exception]  # OSError, or a bug: either way logged and retried


class Saver:
    def __init__(
        self, state: StateFile, done: Callable[[], None], clock: Callable[[], float]
    ) -> None:
        self.state = state
        self._done = done
        self._clock = clock
        self._thread: Optional[threading.Thread] = None
        self._outcome: Optional[Saved] = None
        self.unsaved = False  # changes since the last snapshot taken
        self.last = 0.0  # when the last snapshot written (or tried) was taken
        self.interval = SAVE_INTERVAL

    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def due(self) -> Optional[float]:
        """When the next snapshot is due; None if none is, or the running save wakes the loop."""
        return self.last + self.interval if self.unsaved and not self.busy() else None

    def save(self, take: Callable[[float], Snapshot], force: bool = False) -> None:
        """Snapshot (``take(now)``) when due; ``force``: now, and wait until written."""
        if force:
            self.wait()
        self._note()
        now = self._clock()
        if self.busy():
            return  # it wakes the loop when done
        if not force and (not self.unsaved or now - self.last < self.interval):
            return
        self._start(take(now), now)
        self.unsaved = False  # until a change after this snapshot
        if force:
            self.wait()
            self._note()

    def wait(self) -> None:
        """Return once no save is running (its outcome is noted at the next :meth:`save`)."""
        if self._thread is not None:
            self._thread.join()

    def _note(self) -> None:
        """Take note of a finished save."""
        if self.busy() or self._outcome is None:
            return
        outcome, self._outcome = self._outcome, None
        self.last = max(self.last, outcome.taken)  # a failure is retried as late
        if outcome.error is not None:
            log.error("cannot save state to %s: %s (will retry)", self.state.path, outcome.error)
            self.unsaved = True
            return
        self.interval = max(SAVE_INTERVAL, outcome.seconds / SAVE_SHARE)

    def _start(self, snap: Snapshot, taken: float) -> None:
        """Write ``snap`` (whose rows are copies, see module doc) in the background."""
        assert not self.busy(), "one save at a time"
        self._thread = threading.Thread(
            target=self._run, args=(snap, taken), name="popbsmtp-save", daemon=True
        )
        with signals_to_main_thread():  # signals stay with the core loop
            self._thread.start()

    def _run(self, snap: Snapshot, taken: float) -> None:
        started = time.monotonic()
        error: Optional[Exception] = None
        try:
            self.state.save(snap)
        except Exception as exc:  # noted by the core loop, which logs it
            error = exc
        self._outcome = Saved(taken, time.monotonic() - started, error)
        self._done()
