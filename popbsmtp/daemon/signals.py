"""Signals reach the daemon's core loop safely.

Handlers only set flags and poke a pipe; helper threads are started with our
signals blocked so the kernel delivers them to the main thread.  Nothing here
decides what a signal means (that is cli.py and service.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Callable, Iterator, Optional, TypeVar

from popbsmtp.daemon import logsetup, notify
from popbsmtp.errors import PopbsmtpError

log = logging.getLogger(__name__)
T = TypeVar("T")


class SignalWaker:
    """Wakes the loop from a signal handler without taking a lock there.

    A handler runs in the main thread, which may at that moment hold the
    (non-reentrant) lock inside ``wake`` (in ``wait``/``clear``): calling
    ``wake.set()`` from the handler would deadlock.  The handler writes a byte
    to a pipe instead, and this thread sets ``wake``.
    """

    def __init__(self, wake: threading.Event) -> None:
        self.wake = wake
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._thread = threading.Thread(target=self._relay, name="signal-waker", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        # A full pipe means a wake is pending anyway; a closed one, that we stopped.
        with contextlib.suppress(OSError):
            os.write(self._write, b"!")

    def _relay(self) -> None:
        while os.read(self._read, 512):
            self.wake.set()
        os.close(self._read)

    def close(self) -> None:
        os.close(self._write)  # the relay thread reads EOF and ends
        self._thread.join(timeout=5)


class Requests:
    """What signal handlers ask of a core loop: stop, reload, log statistics.

    The handlers (``popbsmtp run`` installs them) call :meth:`stop`,
    :meth:`reload` or :meth:`statistics`, which only set a flag and wake the
    loop: through the :class:`SignalWaker` while the loop runs, directly
    before (the main thread then holds no lock of ``wake``).  The loop takes
    each request once (:meth:`take_reload`, :meth:`take_statistics`).  The
    daemon and the socketmap front share it, so they answer signals alike.
    """

    def __init__(self, wake: threading.Event) -> None:
        self.wake = wake
        self.waker: Optional[SignalWaker] = None  # set by the loop while it runs
        self.stopping = False
        self._reload = self._statistics = False

    def stop(self) -> None:
        self.stopping = True
        self._poke()

    def reload(self) -> None:
        self._reload = True
        self._poke()

    def statistics(self) -> None:
        self._statistics = True
        self._poke()

    def take_reload(self) -> bool:
        wanted, self._reload = self._reload, False
        return wanted

    def take_statistics(self) -> bool:
        wanted, self._statistics = self._statistics, False
        return wanted

    def _poke(self) -> None:
        waker = self.waker
        if waker is not None:
            waker.poke()
        else:
            self.wake.set()


def reload_config(loader: Optional[Callable[[], T]], apply: Callable[[T], None]) -> None:
    """What a core loop does for SIGHUP: reopen its log, read the config again
    and ``apply`` it.  A config that does not load is never applied."""
    log.info("SIGHUP: reloading the configuration")
    notify.reloading()
    logsetup.reopen()
    try:
        if loader is not None:
            apply(loader())
    except (ValueError, PopbsmtpError) as exc:
        log.error("reload failed, keeping the running configuration: %s", exc)
    notify.ready()


@contextlib.contextmanager
def signals_to_main_thread() -> Iterator[None]:
    """Start helper threads with our signals blocked, so the kernel delivers
    them to the main thread: a blocking call there (a Postfix lock wait) is
    then interrupted and the handler runs at once, not at the next bytecode.
    """
    wanted = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
