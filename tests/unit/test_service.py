"""The core loop in-process with a fake clock and the memory table."""

from __future__ import annotations

import threading
import time

import pytest
from support import append, dovecot_login, write_config

from popbsmtp import config
from popbsmtp.daemon.reaper import Reaper
from popbsmtp.daemon.service import Service


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def service(tmp_path, clock, **options):
    settings = config.load(str(write_config(tmp_path, grace="60s", **options)))
    svc = Service(settings, clock=clock, dry_run=True)
    svc.start()
    return svc


def keys(svc):
    return svc.keeper.writer.keys()


def test_grant_refresh_and_expiry_follow_line_time(tmp_path):
    clock = Clock(time.time())
    log = tmp_path / "mail.log"
    append(log, dovecot_login("192.0.2.1", clock.now - 50))  # 10 s left
    append(log, dovecot_login("192.0.2.2", clock.now - 61))  # too old: never granted
    svc = service(tmp_path, clock)
    try:
        assert keys(svc) == {"192.0.2.1"}
        assert svc.table.get("192.0.2.1").expires == pytest.approx(clock.now + 10, abs=1e-3)
        clock.now += 5
        append(log, dovecot_login("192.0.2.1", clock.now))  # refresh
        svc.step()
        clock.now += 30
        svc.step()
        assert keys(svc) == {"192.0.2.1"}
        clock.now += 30
        svc.step()
        assert keys(svc) == set()
    finally:
        svc.shutdown()


def test_future_timestamps_cannot_extend_a_grant(tmp_path):
    clock = Clock(time.time())
    append(tmp_path / "mail.log", dovecot_login("192.0.2.3", clock.now + 86400 * 300))
    svc = service(tmp_path, clock)
    try:
        assert svc.table.get("192.0.2.3").expires == pytest.approx(clock.now + 60, abs=1e-3)
    finally:
        svc.shutdown()


def test_ignored_networks_and_invalid_addresses_never_enter(tmp_path):
    clock = Clock(time.time())
    log = tmp_path / "mail.log"
    for ip in ("10.1.2.3", "0.0.0.0", "::", "224.0.0.1", "unknown", "192.0.2.9"):
        append(log, dovecot_login(ip, clock.now))
    svc = service(tmp_path, clock, ignore_networks="10.0.0.0/8")
    try:
        assert keys(svc) == {"192.0.2.9"}
    finally:
        svc.shutdown()


def test_state_survives_restart_and_drops_expired(tmp_path):
    clock = Clock(time.time())
    append(tmp_path / "mail.log", dovecot_login("192.0.2.4", clock.now))
    svc = service(tmp_path, clock)
    svc.shutdown()
    clock.now += 30
    again = service(tmp_path, clock)
    try:
        assert keys(again) == {"192.0.2.4"}
    finally:
        again.shutdown()
    clock.now += 31
    third = service(tmp_path, clock)
    try:
        assert keys(third) == set()
    finally:
        third.shutdown()


def test_reaper_wakes_the_loop_at_the_due_time():
    wake = threading.Event()
    reaper = Reaper(wake, poll_interval=3600)
    reaper.start()
    try:
        due = time.time() + 0.2
        reaper.schedule(due)
        assert wake.wait(5), "reaper never woke the loop"
        assert time.time() >= due
    finally:
        reaper.stop()
        reaper.join(5)


def test_manual_grants_keep_their_own_length_across_restart(tmp_path):
    from popbsmtp.grants.control import apply_request

    clock = Clock(time.time())
    svc = service(tmp_path, clock)
    apply_request(svc.table, {"op": "add", "ip": "192.0.2.50", "grace": 3600}, clock.now, 60)
    apply_request(svc.table, {"op": "add", "ip": "192.0.2.51"}, clock.now, 60)
    svc.shutdown()
    again = service(tmp_path, clock)
    try:
        assert again.table.get("192.0.2.50").expires == pytest.approx(clock.now + 3600)
        assert again.table.get("192.0.2.51").expires == pytest.approx(clock.now + 60)
    finally:
        again.shutdown()
