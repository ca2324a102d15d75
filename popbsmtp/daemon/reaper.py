"""The reaper thread decides *when* the core loop must look again.

It sleeps until the earliest of: the next grant expiry, the next safety poll
of the log and map, or a retry after a failed map write — then wakes the
core loop, which does the work.  It never touches the grant table or the map
itself (the core loop owns them; Postfix's LMDB protocol wants one writer).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional


class Reaper(threading.Thread):
    def __init__(
        self,
        wake: threading.Event,
        *,
        poll_interval: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name="popbsmtp-reaper", daemon=True)
        self.wake = wake
        self.poll_interval = poll_interval
        self.clock = clock
        self._cond = threading.Condition()
        self._due: Optional[float] = None
        self._stopped = False
        self.wakeups = 0

    def schedule(self, due: Optional[float]) -> None:
        """Wake the core loop at ``due`` (wall-clock seconds) or at the next poll."""
        with self._cond:
            self._due = due
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def run(self) -> None:
        next_poll = time.monotonic() + self.poll_interval
        with self._cond:
            while not self._stopped:
                timeout = max(0.0, next_poll - time.monotonic())
                if self._due is not None:
                    timeout = min(timeout, max(0.0, self._due - self.clock()))
                self._cond.wait(timeout)
                if self._stopped:
                    break
                fire = time.monotonic() >= next_poll
                if self._due is not None and self.clock() >= self._due:
                    self._due = None
                    fire = True
                if fire:
                    if time.monotonic() >= next_poll:
                        next_poll = time.monotonic() + self.poll_interval
                    self.wakeups += 1
                    self.wake.set()
