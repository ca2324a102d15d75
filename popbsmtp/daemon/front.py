"""The daemon as a socketmap front: ``grants_from = pgsql:FILE``, ``map = socketmap:…``.

An SMTP host's popbsmtp answers its smtpd exactly (one address per IPv6
grant, expiry checked at lookup time) from a mirror of the shared table the
POP/IMAP hosts write: database → feed (sources/pgsql.py) → mirror
(grants/mirror.py) → socketmap writer.  No log, no policy: the POP/IMAP
hosts decided.  Nothing is saved (the database is the truth, read in full
at every start), and until that first read every lookup gets TEMP.  The
main thread only waits for a signal and checks the socket; the feed thread
reads the database and the server thread answers, so neither blocks the
other.  When it stops, the socket goes away (fail closed).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable, Dict, Optional

from popbsmtp.config import Settings
from popbsmtp.daemon import logsetup, notify
from popbsmtp.daemon.signals import (
    Requests,
    SignalWaker,
    reload_config,
    signals_to_main_thread,
)
from popbsmtp.errors import MapError, SetupError, StartupError
from popbsmtp.grants.mirror import Mirror
from popbsmtp.grants.state import StateLock, ensure_dir
from popbsmtp.maps import MapOptions
from popbsmtp.maps.socketmap import Writer
from popbsmtp.sources.pgsql import GrantFeed

log = logging.getLogger(__name__)


class Front:
    """Same life cycle as :class:`popbsmtp.daemon.service.Service` for ``popbsmtp run``."""

    def __init__(self, settings: Settings, loader: Optional[Callable[[], Settings]] = None):
        try:
            import psycopg  # noqa: F401 - checked here so a missing module is named
        except ImportError:
            raise SetupError(
                "grants_from = pgsql: needs the Python module psycopg"
                " (pip install 'popbsmtp[pgsql]')"
            ) from None
        self.settings = settings
        self.loader = loader
        self.wake = threading.Event()
        self.requests = Requests(self.wake)  # what signal handlers ask of the loop
        options = MapOptions(
            settings.map_mode, settings.map_owner, settings.map_group, settings.postfix_config_dir
        )
        self.writer = Writer(settings.map, settings.map_value, options)
        self.mirror = Mirror(self.writer, settings.stale_after, settings.max_entries)
        path = settings.grants_from.partition(":")[2]
        try:
            self.feed = GrantFeed(path, self.mirror)
        except MapError as exc:
            raise SetupError(f"grants_from = {settings.grants_from}: {exc}") from None
        self.lock = StateLock(settings.state_dir)

    def run(self, on_ready: Optional[Callable[[], None]] = None) -> None:
        ensure_dir(self.settings.state_dir)
        if not self.lock.acquire(wait=5.0):
            raise StartupError(
                f"another popbsmtp is running with state_dir {self.settings.state_dir}"
            )
        try:
            self._serve(on_ready)
        finally:
            self.lock.release()
            log.info("stopped")

    def _serve(self, on_ready: Optional[Callable[[], None]]) -> None:
        with signals_to_main_thread():
            try:
                self.writer.open()
            except MapError as exc:
                raise SetupError(f"map = {self.settings.map}: {exc}") from None
            self.feed.start()
            self.requests.waker = SignalWaker(self.wake)
        try:
            log.info(
                "following %s as a socketmap front on %s; lookups get TEMP until it is read",
                self.feed.describe(),
                self.settings.map,
            )
            if on_ready:
                on_ready()
            self._loop()
            notify.stopping()
        finally:
            self.writer.close()  # the socket goes: smtpd's lookups fail (4xx)
            self.feed.stop()
            waker, self.requests.waker = self.requests.waker, None
            if waker is not None:
                waker.close()

    def _loop(self) -> None:
        requests = self.requests
        while not requests.stopping:
            self.wake.wait(self.settings.poll_interval)
            self.wake.clear()
            if requests.take_reload():
                reload_config(self.loader, self._reload)
            if requests.take_statistics():
                log.info("statistics: %s", json.dumps(self.statistics(), sort_keys=True))
            if not requests.stopping and not self.writer.healthy():
                log.warning("%s vanished or was replaced; making it again", self.settings.map)
                self._reopen()

    def _reopen(self) -> None:
        self.writer.close()
        try:
            self.writer.open()
        except MapError as exc:
            log.error("%s (retrying)", exc)

    def _reload(self, new: Settings) -> None:
        """SIGHUP: apply log_level; other options need a restart."""
        logsetup.set_level(new.log_level)
        later = self.settings.changed(new, ("log_level",))
        if later:
            log.warning("changed options need a restart to take effect: %s", ", ".join(later))

    def statistics(self) -> Dict[str, object]:
        server = self.writer._server
        return {
            **self.feed.statistics(),
            "lookups": server.served if server is not None else 0,
            "at": time.time(),
        }
