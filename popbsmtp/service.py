"""The daemon's core loop: wires source → matcher → grants → map.

One thread (the caller's) owns all state.  The watchdog observer and the
reaper only set ``wake``; signal handlers only call :meth:`Service.stop` or
:meth:`Service.request_reload`.  Each wake runs one :meth:`step`: control
requests, new log lines, expiries, then one map write for the whole batch,
then (throttled) an atomic state snapshot.  Nothing in here forks: the
caller daemonizes *before* constructing a Service.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, Dict, Optional

from popbsmtp import control
from popbsmtp.addresses import IgnoredNetworks, parse_networks
from popbsmtp.config import Settings
from popbsmtp.errors import MapError, StartupError
from popbsmtp.grants import GrantTable, refusal
from popbsmtp.mapping import MapKeeper
from popbsmtp.maps._files import check_directory
from popbsmtp.matcher import Login, Matcher
from popbsmtp.profiles import LOGOUT, select
from popbsmtp.reaper import Reaper
from popbsmtp.sources.tail import FileTail
from popbsmtp.sources.watch import Watcher
from popbsmtp.state import Snapshot, StateFile, StateLock, ensure_dir
from popbsmtp.syslog import EnvelopeParser

log = logging.getLogger(__name__)

SAVE_INTERVAL = 1.0


def build_matcher(settings: Settings) -> Matcher:
    return Matcher(
        select(settings.profiles),
        EnvelopeParser(settings.log_format),
        settings.max_line_length,
    )


class Service:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        dry_run: bool = False,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.dry_run = dry_run
        self.wake = threading.Event()
        self._stopping = False
        self.matcher = build_matcher(settings)
        self.ignored: IgnoredNetworks = parse_networks(settings.ignore_networks)
        self.table = GrantTable(settings.max_entries)
        self.state = StateFile(settings.state_dir)
        self.lock = StateLock(settings.state_dir)
        self._last_save = 0.0
        self._unsaved = False
        self.started = 0.0

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        """Open everything; raise StartupError when the daemon cannot run."""
        ensure_dir(self.settings.state_dir)
        if not self.lock.acquire(wait=5.0):
            raise StartupError(
                f"another popbsmtp is running with state_dir {self.settings.state_dir}"
            )
        snap = self.state.load()
        now = self.clock()
        for ip, expires, profile, rule in snap.grants:
            if expires > now:
                self.table.grant(ip, expires, profile, rule)
        self.table.take_changes()
        if not self.dry_run:
            try:
                check_directory(os.path.dirname(self.settings.map.path))
            except MapError as exc:
                raise StartupError(str(exc)) from None
        self.keeper = MapKeeper(self.settings, self.dry_run, self.clock)
        self.keeper.open()
        self.tail = FileTail(
            self.settings.logfile, snap.position, max_line_length=self.settings.max_line_length
        )
        log_dir = os.path.dirname(self.settings.logfile) or "."
        os.makedirs(control.spool_dir(self.settings.state_dir), mode=0o700, exist_ok=True)
        control.check_spool(self.settings.state_dir)
        self.watcher = Watcher(
            self.wake,
            {
                log_dir: [os.path.basename(self.settings.logfile)],
                control.spool_dir(self.settings.state_dir): ["req-"],
            },
        )
        self.watcher.start()
        self.reaper = Reaper(self.wake, poll_interval=self.settings.poll_interval, clock=self.clock)
        self.reaper.start()
        self.step()  # catch up with the log and queued requests; reconciles the map
        self._save(force=True)
        self.started = self.clock()
        log.info(
            "following %s; %d clients authorized in %s",
            self.settings.logfile,
            len(self.table),
            self.keeper.describe(),
        )

    def run(self, on_ready: Optional[Callable[[], None]] = None) -> None:
        """Start, then loop until :meth:`stop`; always saves state on the way out."""
        self.start()
        try:
            if on_ready:
                on_ready()
            while not self._stopping:
                self.wake.wait()
                self.wake.clear()
                if self._stopping:
                    break
                self.step()
            self.step()  # finish the batch that was under way
        finally:
            self.shutdown()

    def stop(self) -> None:
        """Ask the loop to finish; safe from a signal handler."""
        self._stopping = True
        self.wake.set()

    def shutdown(self) -> None:
        for part in ("reaper", "watcher"):
            if hasattr(self, part):
                getattr(self, part).stop()
        try:
            self._save(force=True)
        except OSError as exc:
            log.error("could not save state to %s: %s", self.state.path, exc)
        if hasattr(self, "tail"):
            self.tail.close()
        if hasattr(self, "keeper"):
            self.keeper.close()
        self.lock.release()
        log.info("stopped")

    # -- one batch -------------------------------------------------------

    def step(self) -> None:
        now = self.clock()
        forced = self._apply_requests(now)
        lines = self.tail.read()
        match = self.matcher.match
        for line in lines:
            login = match(line, now)
            if login is not None:
                self.handle(login, now)
        for ip in self.table.expire(now):
            log.info("expired %s", ip)
        self.keeper.publish(self.table, now)
        self._unsaved = self._unsaved or bool(lines) or bool(forced)
        self._save(force=bool(forced))
        self.reaper.schedule(self._next_due())
        if forced:
            for path in forced:
                control.done(path)

    def handle(self, login: Login, now: float) -> None:
        if login.event == LOGOUT:
            return
        reason = refusal(login, now, self.settings.grace, self.ignored)
        if reason is not None:
            log.debug("not granting %s (%s): %s", login.raw_ip, login.rule_id, reason)
            return
        assert login.ip is not None
        expires = min(login.time, now) + self.settings.grace
        new = login.ip not in self.table
        if self.table.grant(login.ip, expires, login.profile, login.rule) and new:
            log.info(
                "%sgranted %s until %s (%s)",
                "[dry run] " if self.dry_run else "",
                login.ip,
                time.strftime("%H:%M:%S", time.localtime(expires)),
                login.rule_id,
            )

    def _apply_requests(self, now: float) -> list:
        handled = []
        for path, request in control.pending(self.settings.state_dir):
            apply_request(self.table, request, now, self.settings.grace)
            handled.append(path)
        return handled

    def _next_due(self) -> Optional[float]:
        due = [self.table.next_expiry(), self.keeper.retry_at, self.keeper.flush_at]
        if self._unsaved:
            due.append(self._last_save + SAVE_INTERVAL)
        found = [d for d in due if d is not None]
        return min(found) if found else None

    def _save(self, force: bool = False) -> None:
        now = self.clock()
        if not force and (not self._unsaved or now - self._last_save < SAVE_INTERVAL):
            return
        snap = Snapshot(self.table.rows(), self.tail.position if hasattr(self, "tail") else None)
        try:
            self.state.save(snap)
        except OSError as exc:
            log.error("cannot save state to %s: %s (will retry)", self.state.path, exc)
            return
        self._last_save, self._unsaved = now, False

    def statistics(self) -> Dict[str, object]:
        stats = self.matcher.stats
        return {
            "lines_read": self.tail.stats.lines,
            "candidates": stats.candidates,
            "unparseable": stats.unparseable,
            "overlong": self.tail.stats.overlong,
            "matched": dict(stats.matched),
            "grants_active": len(self.table),
            "map_writes": self.keeper.writes,
            "last_error": self.keeper.last_error or self.tail.stats.last_error,
        }


def apply_request(table: GrantTable, request: dict, now: float, grace: float) -> None:
    """Apply one add/remove/flush request to the table (daemon or offline tool)."""
    op = request["op"]
    if op == "add":
        expires = now + float(request.get("grace") or grace)
        table.remove(request["ip"])
        table.grant(request["ip"], expires, "manual", "add")
        log.info("added %s by request until %s", request["ip"], time.ctime(expires))
    elif op == "remove":
        if table.remove(request["ip"]):
            log.info("removed %s by request", request["ip"])
    elif op == "flush":
        log.info("flushed %d clients by request", table.clear())
    # "save" only asks for a fresh snapshot (popbsmtp list), which every request gets


__all__ = ["Service", "apply_request", "build_matcher", "MapError"]
