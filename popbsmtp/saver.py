"""Saver: writes state snapshots on a thread of its own, one at a time.

A snapshot of 100,000 grants takes about 0.1 s to write and one of
1,000,000 about 1 s.  Written by the core loop, that is how long a login
arriving meanwhile waits for its grant.  Here the core loop takes the
snapshot's copies in one go (grants and read position of the same moment,
:meth:`popbsmtp.grants.GrantTable.frozen_rows`), hands them over and goes
on reading the log; the save thread serialises and writes them
(:meth:`popbsmtp.state.StateFile.save`, atomic as before).  The GIL is
held for one chunk of rows at a time (a few milliseconds), so the core
loop waits at most that long.

Only one save runs at a time, and the core loop collects its outcome
(:meth:`collect`, :meth:`wait`): the thread never touches the daemon's
state.  It wakes the core loop when it is done, so a save that failed or
that left changes behind is retried without waiting for the next line.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, NamedTuple, Optional

from popbsmtp.signals import signals_to_main_thread
from popbsmtp.state import Snapshot, StateFile


class Saved(NamedTuple):
    """The outcome of one save: when its snapshot was taken, how long it took."""

    taken: float
    seconds: float
    error: Optional[Exception]  # OSError, or a bug: either way logged and retried


class Saver:
    def __init__(self, state: StateFile, done: Callable[[], None]) -> None:
        self.state = state
        self._done = done
        self._thread: Optional[threading.Thread] = None
        self._outcome: Optional[Saved] = None

    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, snap: Snapshot, taken: float) -> None:
        """Write ``snap`` (whose rows are copies, see module doc) in the background."""
        assert not self.busy(), "one save at a time"
        self._outcome = None
        self._thread = threading.Thread(
            target=self._run, args=(snap, taken), name="popbsmtp-save", daemon=True
        )
        with signals_to_main_thread():  # signals stay with the core loop
            self._thread.start()

    def collect(self) -> Optional[Saved]:
        """The outcome of the last save if it has finished and was not collected yet."""
        if self.busy():
            return None
        outcome, self._outcome = self._outcome, None
        return outcome

    def wait(self) -> None:
        """Return once no save is running (its outcome is left for :meth:`collect`)."""
        if self._thread is not None:
            self._thread.join()

    def _run(self, snap: Snapshot, taken: float) -> None:
        started = time.monotonic()
        error: Optional[Exception] = None
        try:
            self.state.save(snap)
        except Exception as exc:  # handed to the core loop, which logs it
            error = exc
        self._outcome = Saved(taken, time.monotonic() - started, error)
        self._done()
