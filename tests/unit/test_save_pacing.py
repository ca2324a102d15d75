"""State snapshots never stall the core loop: paced by their cost, written on their own thread."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import List, Tuple

import pytest
from support import append, dovecot_login, write_config

from popbsmtp import config
from popbsmtp.daemon.service import Service
from popbsmtp.grants import GrantTable
from popbsmtp.grants import saver as saver_module
from popbsmtp.grants.saver import SAVE_INTERVAL, SAVE_SHARE
from popbsmtp.grants.state import Snapshot, StateFile

# Past any paced interval (a save's real cost / SAVE_SHARE) a save of a few
# grants gets, even when fsync is slow on a loaded machine or the test held it.
LATER = 60.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class SlowTime:
    """``time`` for the saver module, whose monotonic clock a save advances."""

    def __init__(self) -> None:
        self.mono = 0.0

    def monotonic(self) -> float:
        return self.mono

    def __getattr__(self, name: str):
        return getattr(time, name)


@pytest.fixture(autouse=True)
def _saves_take_no_time(monkeypatch):
    """Pacing follows a save's measured cost: with the real clock, a busy machine (or a
    save the test holds) makes saves look slow and pushes the next one out.  The test
    that measures cost advances its own SlowTime."""
    monkeypatch.setattr(saver_module, "time", SlowTime())


def started(tmp_path: Path) -> Tuple[Service, Clock, Path]:
    clock = Clock(time.time())
    settings = config.load(str(write_config(tmp_path, grace="1h")))
    svc = Service(settings, clock=clock, dry_run=True)
    svc.start()
    return svc, clock, tmp_path / "mail.log"


def first_login_when_a_save_is_due(svc: Service, clock: Clock, log: Path) -> None:
    """A login a save interval after start, read in one step (which starts a save)."""
    clock.now += LATER
    append(log, dovecot_login("192.0.2.1", clock.now))
    svc.step()


def saved_addresses(svc: Service) -> List[str]:
    return [row[0] for row in StateFile(svc.settings.state_dir).load().grants]


def test_snapshot_interval_grows_with_the_cost_of_a_snapshot(tmp_path, monkeypatch):
    fake = SlowTime()
    monkeypatch.setattr(saver_module, "time", fake)
    svc, clock, log = started(tmp_path)
    saves = []
    real_save = svc.state.save

    def slow_save(snap):
        fake.mono += 0.5  # this snapshot "took" half a second
        saves.append(clock.now)
        real_save(snap)

    svc.state.save = slow_save
    try:
        first_login_when_a_save_is_due(svc, clock, log)
        svc.saver.wait()
        assert len(saves) == 1
        svc.step()  # the core loop takes note of the finished save
        interval = 0.5 / SAVE_SHARE
        assert svc.saver.interval == interval
        clock.now += interval / 2
        append(log, dovecot_login("192.0.2.2", clock.now))
        svc.step()
        svc.saver.wait()
        assert len(saves) == 1  # too soon for another slow snapshot
        clock.now += interval / 2 + 0.1
        svc.step()
        svc.saver.wait()
        assert len(saves) == 2
    finally:
        svc.shutdown()


def test_a_login_is_granted_while_a_snapshot_is_being_written(tmp_path, monkeypatch):
    # The saver's clock stands still: how long the test holds the save (longer on a
    # loaded machine) must not stretch the pacing past the next due save.
    monkeypatch.setattr(saver_module, "time", SlowTime())
    svc, clock, log = started(tmp_path)
    release, writing = threading.Event(), threading.Event()
    real_save = svc.state.save

    def held_save(snap: Snapshot) -> None:
        writing.set()
        assert release.wait(30), "the test never released the save"
        real_save(snap)

    svc.state.save = held_save  # type: ignore[method-assign]
    try:
        first_login_when_a_save_is_due(svc, clock, log)
        assert writing.wait(10) and svc.saver.busy()
        append(log, dovecot_login("192.0.2.2", clock.now))
        svc.step()  # returns at once, the save still held
        assert "192.0.2.2" in svc.table and svc.saver.busy()
        due = svc._next_due()  # the save wakes the loop when done: no wake-up spin meanwhile
        assert due is None or due > clock.now
        release.set()
        svc.saver.wait()
        # The snapshot is of its moment: the first login and its position only.
        assert saved_addresses(svc) == ["192.0.2.1"]
        assert svc.saver.unsaved
        clock.now += LATER
        svc.step()  # takes note of the save, and the next one is due
        svc.saver.wait()
        assert sorted(saved_addresses(svc)) == ["192.0.2.1", "192.0.2.2"]
    finally:
        release.set()
        svc.shutdown()


def test_a_forced_snapshot_waits_for_the_running_one_then_includes_everything(tmp_path):
    svc, clock, log = started(tmp_path)
    release = threading.Event()
    real_save = svc.state.save
    order: List[str] = []

    def held_save(snap: Snapshot) -> None:
        if not order:
            assert release.wait(30), "the test never released the save"
        real_save(snap)
        order.append("saved")

    svc.state.save = held_save  # type: ignore[method-assign]
    try:
        first_login_when_a_save_is_due(svc, clock, log)
        append(log, dovecot_login("192.0.2.2", clock.now))
        svc._read_log(clock.now)
        threading.Timer(0.05, release.set).start()  # frees the first save later
        svc._save(force=True)  # what add/remove requests and shutdown do
        assert order == ["saved", "saved"]
        assert sorted(saved_addresses(svc)) == ["192.0.2.1", "192.0.2.2"]
    finally:
        release.set()
        svc.shutdown()


def test_a_failed_snapshot_is_logged_and_written_again(tmp_path, caplog):
    svc, clock, log = started(tmp_path)
    real_save = svc.state.save
    failures = [OSError(28, "No space left on device")]

    def failing_save(snap: Snapshot) -> None:
        if failures:
            raise failures.pop()
        real_save(snap)

    svc.state.save = failing_save  # type: ignore[method-assign]
    try:
        first_login_when_a_save_is_due(svc, clock, log)
        svc.saver.wait()
        assert saved_addresses(svc) == []
        with caplog.at_level(logging.ERROR):
            svc.step()  # notes the failure
        assert "No space left on device" in caplog.text
        assert (
            svc.saver.unsaved and not svc.saver.busy()
        )  # not at once: no busy loop on a full disk
        assert svc._next_due() is not None and svc._next_due() >= clock.now + SAVE_INTERVAL - 0.2
        clock.now += LATER
        svc.step()  # the retry
        svc.saver.wait()
        assert saved_addresses(svc) == ["192.0.2.1"]
    finally:
        svc.shutdown()


@pytest.mark.parametrize("rows", [0, 3])
def test_frozen_rows_do_not_change_with_the_table(rows):
    table = GrantTable()
    for n in range(rows):
        table.grant(f"192.0.2.{n}", 1000.0 + n, "dovecot", "login")
    table.grant("198.51.100.1", 2000.0, "cyrus", "login")
    frozen = table.frozen_rows()
    table.remove("198.51.100.1")
    table.grant("203.0.113.9", 3000.0, "uw", "login")
    expected = [(f"192.0.2.{n}", 1000.0 + n, "dovecot", "login") for n in range(rows)]
    assert list(frozen) == expected + [("198.51.100.1", 2000.0, "cyrus", "login")]
