"""The daemon's core loop: wires source → matcher → grants → map.

One thread (the caller's) owns all state.  The watchdog observer and the
reaper only set ``wake``; signal handlers only set a flag in ``requests``
(:class:`popbsmtp.daemon.signals.Requests`).  Each wake runs one :meth:`step`: control
requests, new log lines, expiries, then one map write for the whole batch,
then (throttled) an atomic state snapshot.  Nothing in here forks: the
caller daemonizes *before* constructing a Service.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import threading
import time
from typing import Callable, Dict, List, Optional, Union

from popbsmtp.config import Settings
from popbsmtp.daemon import logsetup, notify
from popbsmtp.daemon.reaper import Reaper
from popbsmtp.daemon.signals import (
    Requests,
    SignalWaker,
    reload_config,
    signals_to_main_thread,
)
from popbsmtp.errors import MapError, SetupError, StartupError
from popbsmtp.grants import GrantTable, control, when
from popbsmtp.grants.control import MANUAL, apply_request
from popbsmtp.grants.saver import Saver
from popbsmtp.grants.state import Snapshot, StateFile, StateLock, ensure_dir
from popbsmtp.maps import partial_lookups, writes_files
from popbsmtp.maps._files import check_directory, check_writable
from popbsmtp.maps.keeper import MapKeeper
from popbsmtp.parse.addresses import IgnoredNetworks, parse_networks
from popbsmtp.parse.envelope import EnvelopeParser
from popbsmtp.parse.matcher import Login, Matcher
from popbsmtp.policy import GRANT, HOLD, REFUSE, RELEASE, Decision, apply, policy_for
from popbsmtp.profiles import select
from popbsmtp.sources.choice import JOURNAL, choose_source
from popbsmtp.sources.journal import JournalCursor, JournalSource, match_entries
from popbsmtp.sources.position import Position
from popbsmtp.sources.tail import FileTail
from popbsmtp.sources.trust import TrustCheck
from popbsmtp.sources.watch import Watcher
from popbsmtp.sources.window import grace_start

log = logging.getLogger(__name__)

# Catching up with a big log publishes every this many pending map changes,
# and hands freed memory back then: the pending sets and an LMDB write
# transaction stay small, and glibc does not keep what the batch churned
# through (bench/memory.py measures it).
PUBLISH_PENDING = 10_000
# Bytes of log per read while catching up: each 1 MiB block in flight costs
# its Login objects too, and glibc keeps what a big batch once took.
READ_BUDGET = 1 << 20
# Refused journal entries logged one by one before only every 1000th is: any
# local user can send entries, and each must not cost a line of our log.
LOGGED_REFUSALS = 10
# What SIGHUP applies to a running daemon; other changed options wait for a restart.
RELOADABLE = ("profiles", "log_format", "grace", "ignore_networks", "log_level", "journal_trust")


def _release_memory() -> None:
    """Hand back what catching up with a big log allocated: glibc keeps freed
    heap pages otherwise (tens of MiB at 100,000 grants)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _check_logfile(path: str) -> None:
    """A log the daemon may not read is a setting or permission to fix, not a run-time fault.

    A missing log is fine (the tail waits for it to appear).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SetupError(
            f"logfile {path}: {exc.strerror}; let the daemon's user read it "
            "(docs/install.md: the unit's CAP_DAC_READ_SEARCH, or group adm) or set logfile"
        ) from None
    os.close(fd)


def build_matcher(settings: Settings, profiles: Optional[List[str]] = None) -> Matcher:
    """The matcher ``settings`` describe; ``profiles`` overrides its list (test, doctor)."""
    return Matcher(
        select(profiles or settings.profiles),
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
        loader: Optional[Callable[[], Settings]] = None,
    ) -> None:
        self.settings = settings
        self.loader = loader  # re-reads the config on SIGHUP
        self.clock = clock
        self.dry_run = dry_run
        self.wake = threading.Event()
        self.requests = Requests(self.wake)  # what signal handlers ask of the loop
        self.matcher = build_matcher(settings)
        self.trust = TrustCheck(self.matcher.profiles, settings.journal_trust)
        self.untrusted = 0  # journal entries refused: their sender is not the server
        ignored: IgnoredNetworks = parse_networks(
            settings.ignore_networks, postconf_dir=settings.postfix_config_dir
        )
        self.table = GrantTable(settings.max_entries)
        self.policy = policy_for(settings, ignored, self.matcher.profiles)
        # Sees every decision as it is applied (tests compare it with `popbsmtp test`).
        self.on_decision: Optional[Callable[[Decision], None]] = None
        self.state = StateFile(settings.state_dir)
        self.saver = Saver(self.state, self.wake.set, self.clock)
        self.lock = StateLock(settings.state_dir)
        self.keeper = MapKeeper(settings, dry_run, clock)
        self.source = choose_source(settings, clock())
        watched: Dict[str, List[str]] = {control.spool_dir(settings.state_dir): ["req-"]}
        self.tail: Union[FileTail, JournalSource]
        if self.source.kind == JOURNAL:
            self.tail = JournalSource(
                self.source.path,
                since=clock() - settings.grace,
                wake=self.wake.set,
                max_line_length=settings.max_line_length,
            )  # its reader thread wakes the loop: no directory to watch
        else:
            path = self.source.path
            self.tail = FileTail(
                path, max_line_length=settings.max_line_length, initial_offset=self._window_start
            )
            watched[os.path.dirname(path) or "."] = [os.path.basename(path)]
        self.watcher = Watcher(self.wake, watched)
        self.reaper = Reaper(self.wake, poll_interval=settings.poll_interval, clock=clock)
        # What start() opened, closed in reverse order by shutdown() (or by a failed start).
        self._opened = contextlib.ExitStack()
        self._last_now = float("inf")  # the first step checks grants loaded from state
        self.started = 0.0

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        """Open everything; raise StartupError when the daemon cannot run (then
        everything opened so far is closed again)."""
        try:
            self._open()
        except BaseException:
            self._opened.close()
            raise
        self.step()  # catch up with the log and queued requests; reconciles the map
        _release_memory()
        self._save(force=True)
        self.started = self.clock()
        spec = self.settings.map
        if self.settings.ipv6_scope == "neighbours" and partial_lookups(spec):
            log.warning(
                "ipv6_scope = neighbours: an IPv6 grant of P::S also lets every address"
                " written P::S:... relay in %s (docs/maps.md)",
                spec,
            )
        elif self.policy.ipv6_exact_only and spec.type == "pgsql":  # an older pgsql-init's file
            log.info("compressed IPv6 logins are refused: %s", self.policy.ipv6_fix)
        log.info(
            "following %s; %d clients authorized in %s",
            self.source.describe(),
            len(self.table),
            self.keeper.describe(),
        )

    def _open(self) -> None:
        opened = self._opened
        ensure_dir(self.settings.state_dir)
        if not self.lock.acquire(wait=5.0):
            raise StartupError(
                f"another popbsmtp is running with state_dir {self.settings.state_dir}"
            )
        opened.callback(self.lock.release)
        snap = self.state.load()
        now = self.clock()
        # A clock that went back while we were stopped would lengthen every
        # grant by the jump: shift manual ones back by it (the others are
        # capped to grace in the first step anyway).
        shift = min(0.0, now - snap.saved) if snap.saved is not None else 0.0
        refused: List[str] = []
        for ip, expires, profile, rule in snap.grants:
            if profile == MANUAL:
                expires += shift
            if expires <= now:
                continue
            why = self.policy.restore_refusal(ip)
            if why is None:
                self.table.grant(ip, expires, profile, rule)
            else:
                refused.append(why)
        if refused:
            log.warning("%d saved grant(s) not restored: %s", len(refused), refused[0])
        self.table.take_changes()
        if not self.dry_run and writes_files(self.settings.map.type):
            try:
                check_directory(os.path.dirname(self.settings.map.path))
                check_writable(os.path.dirname(self.settings.map.path))
            except MapError as exc:
                raise SetupError(f"map = {self.settings.map}: {exc}") from None
        _check_logfile(self.settings.logfile)
        self.keeper.open()
        opened.callback(self.keeper.close)
        # Fail closed, at stop and after a failed start alike: nobody expires
        # what a stopped daemon leaves in the table.  Runs after the last save
        # and still under the state lock, so `popbsmtp withdraw` and a new
        # daemon wait; the next start puts the saved grants back.
        opened.callback(self.keeper.withdraw)
        log.info("reading %s: %s", self.source.describe(), self.source.reason)
        self._resume(snap.position)
        opened.callback(self.tail.close)
        os.makedirs(control.spool_dir(self.settings.state_dir), mode=0o700, exist_ok=True)
        control.check_spool(self.settings.state_dir)
        # The last word on the way out: the state, once the threads are gone.
        opened.callback(self._save, True)  # a failure is logged by the saver
        with signals_to_main_thread():
            self.watcher.start()
            opened.callback(self.watcher.stop)
            self.reaper.start()
            opened.callback(self.reaper.stop)

    def _resume(self, position: object) -> None:
        """Resume the source at the saved position if it is one of its own."""
        if isinstance(self.tail, JournalSource):
            self.tail.resume(position if isinstance(position, JournalCursor) else None)
            if self.trust.untrusted_profiles:
                log.info(
                    "profiles without journal trust grant nothing from the journal: %s",
                    ", ".join(self.trust.untrusted_profiles),
                )
            for word in self.trust.unknown_users:
                log.warning("journal trust names an unknown user (trusts nobody): %s", word)
        else:
            self.tail.resume(position if isinstance(position, Position) else None)

    def run(self, on_ready: Optional[Callable[[], None]] = None) -> None:
        """Start, then loop until :meth:`stop`; always saves state on the way out."""
        self.start()
        requests = self.requests
        with signals_to_main_thread():
            waker = SignalWaker(self.wake)
        requests.waker = waker
        try:
            if on_ready:
                on_ready()
            while not requests.stopping:
                self.wake.wait()
                self.wake.clear()
                if requests.stopping:
                    break
                if requests.take_reload():
                    reload_config(self.loader, self.reload)
                self.step()
                if requests.take_statistics():
                    log.info("statistics: %s", json.dumps(self.statistics(), sort_keys=True))
            notify.stopping()
            self.step()  # finish the batch that was under way
        finally:
            requests.waker = None
            waker.close()
            self.shutdown()

    def reload(self, settings: Settings) -> None:
        """Apply the reloadable options of ``settings``; no grant is dropped or shortened."""
        matcher = build_matcher(settings)  # raises on an unknown profile: nothing applied
        ignored = parse_networks(settings.ignore_networks, postconf_dir=settings.postfix_config_dir)
        trust = TrustCheck(matcher.profiles, settings.journal_trust)
        matcher.stats = self.matcher.stats
        self.matcher, self.trust = matcher, trust
        later = self.settings.changed(settings, RELOADABLE)
        self.settings = self.settings.reloaded(settings, RELOADABLE)
        self.policy.reconfigure(settings.grace, ignored)
        logsetup.set_level(settings.log_level)
        if later:
            log.warning("changed options need a restart to take effect: %s", ", ".join(later))
        log.info("configuration reloaded; %d clients authorized", len(self.table))

    def shutdown(self) -> None:
        """Stop the threads, save the state, close the log and the table, unlock."""
        self._opened.close()
        log.info("stopped")

    # -- one batch -------------------------------------------------------

    def step(self) -> None:
        now = self.clock()
        if now < self._last_now:
            self._cap_expiries(now)
        self._last_now = now
        forced = self._apply_requests(now)
        lines = self._read_log(now)
        gone = self.table.expire(now)
        for ip in gone:
            log.info("expired %s", ip)
        self.keeper.publish(self.table, now)
        if len(gone) >= PUBLISH_PENDING:
            _release_memory()  # a mass expiry: glibc would keep what those grants held
        self.saver.unsaved = self.saver.unsaved or bool(lines) or bool(forced)
        self._save(force=bool(forced))
        self.reaper.schedule(self._next_due())
        if forced:
            for path in forced:
                control.done(path)

    def _read_log(self, now: float) -> bool:
        """Match every complete line there is now, a bounded batch of blocks at a time."""
        if isinstance(self.tail, JournalSource):
            return self._read_journal(self.tail, now)
        got = False
        while True:
            blocks = self.tail.read_blocks(READ_BUDGET)
            for block in blocks:
                shown = log.isEnabledFor(logging.INFO)
                for _, login in self.matcher.match_block_at(block, now):
                    self.handle(login, now, shown)
                if self.table.pending() >= PUBLISH_PENDING:
                    self.keeper.publish(self.table, now)  # catching up: bound the pending set
                    _release_memory()
            got = got or bool(blocks)
            if not self.tail.more:
                return got

    def _read_journal(self, journal: JournalSource, now: float) -> bool:
        """Match every journal entry queued now; only trusted senders' events count."""
        got = False
        while True:
            entries = journal.read_entries()
            for _, entry, login, refused in match_entries(entries, self.matcher, self.trust):
                if login is None:
                    continue
                if refused is None:
                    self.handle(login, now)
                    continue
                self.untrusted += 1
                if self.untrusted <= LOGGED_REFUSALS or self.untrusted % 1000 == 0:
                    log.warning(
                        "refused journal entry for %s (%s): %s [%s]",
                        login.rule_id, login.raw_ip or login.session or "-", refused,
                        entry.sender.describe(),
                    )  # fmt: skip
                if self.untrusted == LOGGED_REFUSALS:
                    log.warning(
                        "%d journal entries refused: further refusals are counted"
                        " in the statistics (untrusted) and only every 1000th is logged",
                        LOGGED_REFUSALS,
                    )
            if self.table.pending() >= PUBLISH_PENDING:
                self.keeper.publish(self.table, now)
            got = got or bool(entries)
            if not journal.more:
                return got

    def _window_start(self, fd: int) -> int:
        """No saved position: skip what is too old to grant (:func:`grace_start`)."""
        return grace_start(fd, self.matcher.parser, self.clock(), self.settings.grace)

    def _cap_expiries(self, now: float) -> None:
        """After the clock went back, no grant may outlive what ``now`` allows.

        Otherwise a jump back by a day would let every client relay a day
        longer.  At start (sessions are not saved) that is ``grace``; while
        running, a grant held by an open session may keep ``max_session``.
        O(n), but only at start and after a backward jump.
        """
        starting = self._last_now == float("inf")
        capped = 0
        for grant in self.table:
            if starting and grant.profile == MANUAL:
                continue  # `popbsmtp add --for` set its length, not grace
            window = (
                self.policy.grace if starting else self.policy.window(grant.profile, grant.rule)
            )
            if grant.expires > now + window:
                self.table.set_expiry(grant.ip, now + window, grant.profile, grant.rule)
                capped += 1
        if capped and not starting:
            log.warning("clock went back; %d grants capped to their window from now", capped)

    def handle(self, found: Login, now: float, shown: Optional[bool] = None) -> None:
        """Apply what the policy decides for one recognised event.

        ``shown``: whether INFO lines are logged, when the caller asked once
        for a whole block of events.
        """
        table = self.table
        if shown is None:
            shown = log.isEnabledFor(logging.INFO)
        for decision in self.policy.decide(found, now, table):
            new = shown and decision.ip is not None and decision.ip not in table
            applied = apply(decision, table)
            if self.on_decision is not None:
                self.on_decision(decision)
            if shown:  # strftime is not free: only when shown
                self._report(decision, applied, new)

    def _report(self, decision: Decision, applied: bool, new: bool) -> None:
        dry = "[dry run] " if self.dry_run else ""
        kind, ip, rule = decision.kind, decision.ip, decision.event.rule_id
        grant = self.table.get(ip) if applied and ip is not None else None
        if kind == REFUSE and (decision.reason or "").startswith("IPv6 key"):
            log.info("%snot granting %s (%s): %s", dry, ip, rule, decision.reason)
        elif kind == REFUSE:
            log.debug(
                "%snot granting %s (%s): %s", dry, decision.event.raw_ip, rule, decision.reason
            )
        elif grant is None:
            log.debug("%s%s %s (%s): no change", dry, kind, ip or "-", rule)
        elif kind == RELEASE:
            log.info("%ssession of %s ended; may relay until %s", dry, ip, when(grant.expires))
        elif new and kind in (GRANT, HOLD):
            held = "while its session is open, at most until" if kind == HOLD else "until"
            log.info("%sgranted %s %s %s (%s)", dry, ip, held, when(grant.expires), rule)

    def _apply_requests(self, now: float) -> list:
        handled = []
        for path, request in control.pending(self.settings.state_dir):
            apply_request(self.table, request, now, self.settings.grace)
            handled.append(path)
        return handled

    def _next_due(self) -> Optional[float]:
        due = [self.table.next_expiry(), self.keeper.retry_at, self.keeper.flush_at]
        due.append(self.saver.due())
        found = [d for d in due if d is not None]
        return min(found) if found else None

    def _save(self, force: bool = False) -> None:
        """Snapshot grants and position when due (:class:`popbsmtp.grants.saver.Saver`).

        Written on the saver's thread so a big table does not hold up the
        logins that arrive meanwhile; ``force``: now, and wait until written.
        """
        self.saver.save(self._snapshot, force)

    def _snapshot(self, now: float) -> Snapshot:
        position = self.tail.position
        return Snapshot(self.table.frozen_rows(), position, saved=now)

    def statistics(self) -> Dict[str, object]:
        stats = self.matcher.stats
        return {
            "lines_read": self.tail.stats.lines,
            "candidates": stats.candidates,
            "unparseable": stats.unparseable,
            "suspect": stats.suspect,
            "overlong": self.tail.stats.overlong,
            "untrusted": self.untrusted,
            "torn": self.tail.stats.torn,
            "matched": dict(stats.matched),
            "grants_active": len(self.table),
            "map_writes": self.keeper.writes,
            "last_error": self.keeper.last_error or self.tail.stats.last_error,
        }


__all__ = ["Service", "apply_request", "build_matcher", "MapError"]
