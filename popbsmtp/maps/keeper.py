"""Keep the Postfix table equal to the grant table, whatever happens to it.

Normally each batch's changes are applied incrementally.  When a write
fails (directory not writable, disk full), the keeper logs once, backs off
(1 s doubling to 60 s) and then reconciles the whole table; the same happens
when the table file vanished or was replaced, and every few minutes as a
check.  It never raises out of :meth:`publish`: tailing goes on.

When the daemon stops, :meth:`MapKeeper.withdraw` empties the table (fail
closed: nobody would expire what it holds); the grants stay in the saved
state and the reconcile at the next start puts the unexpired ones back.
:func:`withdraw_table` does the same from ``popbsmtp withdraw`` after a crash.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable, Optional

from popbsmtp.config import Settings
from popbsmtp.errors import MapError, SetupError
from popbsmtp.grants import GrantTable
from popbsmtp.maps import MapOptions, MapSpec, MapWriter, open_writer, writer_class

log = logging.getLogger(__name__)

VERIFY_INTERVAL = 300.0
MAX_BACKOFF = 60.0


def _options(settings: Settings) -> MapOptions:
    return MapOptions(
        settings.map_mode, settings.map_owner, settings.map_group, settings.postfix_config_dir
    )


def writer_for(settings: Settings, dry_run: bool = False) -> MapWriter:
    spec: MapSpec = settings.map
    if dry_run:
        spec = MapSpec("memory", spec.path)
    return open_writer(spec, settings.map_value, _options(settings), settings.map_writer)


def withdraw_table(settings: Settings) -> Optional[int]:
    """Empty the configured table in place; how many keys it held, None if there is none.

    A missing table is not created: nothing grants through it, and an
    uninstalled Postfix or a purged package needs no new file.
    """
    spec: MapSpec = settings.map
    kind = writer_class(spec.type, settings.map_writer, settings.postfix_config_dir)
    writer = kind(spec, settings.map_value, _options(settings))
    if not any(os.path.lexists(name) for name in writer.files):
        return None
    writer.open()
    try:
        return writer.empty()
    finally:
        writer.close()


class MapKeeper:
    def __init__(
        self, settings: Settings, dry_run: bool = False, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.dry_run = dry_run
        self.clock = clock
        self.writer: Optional[MapWriter] = None
        self.dirty = True
        self.retry_at: Optional[float] = None
        self.flush_at: Optional[float] = None  # when a batching writer wants flush()
        self.backoff = 1.0
        self.writes = 0
        self.last_error = ""
        self.last_write = 0.0
        self._verify_at = 0.0

    def open(self) -> None:
        try:
            self.writer = writer_for(self.settings, self.dry_run)
        except MapError as exc:
            raise SetupError(f"map = {self.settings.map}: {exc}") from None

    def describe(self) -> str:
        return "memory (dry run)" if self.dry_run else str(self.settings.map)

    def publish(self, table: GrantTable, now: float) -> None:
        expiring = self.writer is not None and self.writer.expiring
        retimed = table.take_retimed() if expiring else {}
        added, removed = table.take_changes()
        if self.retry_at is not None and now < self.retry_at:
            return
        if self.writer is not None and not self.writer.healthy():
            log.warning("%s vanished or was replaced; rebuilding it", self.describe())
            self.dirty = True
        try:
            if not self.dirty:
                assert self.writer is not None
                if retimed:
                    self.writer.retime(retimed)
                if added or removed:
                    self.writer.apply(added, removed)
                    self._written()
                if now >= self._verify_at:
                    self._verify_at = now + VERIFY_INTERVAL
                    self.dirty = self._disagrees(table)
            if self.dirty:
                self.reconcile(table)
            self._flush(now)
        except MapError as exc:
            self.flush_at = None
            self._failed(str(exc), now)

    def _flush(self, now: float) -> None:
        """Let a batching writer (maps/rebuild.py) do deferred work once it is due."""
        assert self.writer is not None
        delay = self.writer.pending()
        if delay is not None and delay <= 0:
            self.writer.flush()
            self._written()
            delay = self.writer.pending()
        self.flush_at = None if delay is None else now + delay

    def reconcile(self, table: GrantTable) -> None:
        """Make the table file hold exactly the grants (reopening it if needed)."""
        if self.writer is None or not self.writer.healthy():
            if self.writer is not None:
                self.writer.close()
                self.writer = None
            self.writer = writer_for(self.settings, self.dry_run)
        if self.writer.expiring:
            self.writer.retime({ip: expires for ip, expires, _, _ in table.iter_rows()})
        self.writer.replace(table.keys())
        self._written()
        self._verify_at = self.clock() + VERIFY_INTERVAL
        if self.last_error:
            log.info("%s is written again", self.describe())
            self.last_error = ""
        self.dirty = False

    def _disagrees(self, table: GrantTable) -> bool:
        try:
            assert self.writer is not None
            differs = self.writer.differs(table.keys())
        except MapError:
            return True
        if differs:
            log.warning("%s differs from the grant table; rebuilding it", self.describe())
        return differs

    def _written(self) -> None:
        self.writes += 1
        self.last_write = self.clock()
        self.retry_at = None
        self.backoff = 1.0

    def _failed(self, message: str, now: float) -> None:
        if message != self.last_error:
            log.error("%s (retrying)", message)
        self.last_error = message
        self.dirty = True
        self.retry_at = now + self.backoff
        self.backoff = min(self.backoff * 2, MAX_BACKOFF)

    def withdraw(self) -> bool:
        """Leave the table empty as the daemon stops; False (logged) when that failed."""
        try:
            if self.writer is None or not self.writer.healthy():
                self.close()
                self.writer = writer_for(self.settings, self.dry_run)
            held = self.writer.empty()
        except MapError as exc:
            log.error("%s; the table still authorizes its clients: run popbsmtp withdraw", exc)
            return False
        log.info(
            "withdrew %d clients from %s; they stay saved for the next start",
            held,
            self.describe(),
        )
        return True

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
