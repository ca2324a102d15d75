"""A slow state snapshot is taken less often, so a big table does not stall the core loop."""

from __future__ import annotations

import time

from support import append, dovecot_login, write_config

from popbsmtp import config
from popbsmtp import service as service_module
from popbsmtp.service import SAVE_INTERVAL, SAVE_SHARE, Service


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class SlowTime:
    """``time`` for the service module, whose monotonic clock a save advances."""

    def __init__(self) -> None:
        self.mono = 0.0

    def monotonic(self) -> float:
        return self.mono

    def __getattr__(self, name: str):
        return getattr(time, name)


def test_snapshot_interval_grows_with_the_cost_of_a_snapshot(tmp_path, monkeypatch):
    clock = Clock(time.time())
    fake = SlowTime()
    monkeypatch.setattr(service_module, "time", fake)
    settings = config.load(str(write_config(tmp_path, grace="1h")))
    svc = Service(settings, clock=clock, dry_run=True)
    svc.start()
    saves = []
    real_save = svc.state.save

    def slow_save(snap):
        fake.mono += 0.5  # this snapshot "took" half a second
        saves.append(clock.now)
        real_save(snap)

    svc.state.save = slow_save
    try:
        log = tmp_path / "mail.log"
        clock.now += SAVE_INTERVAL + 0.1
        append(log, dovecot_login("192.0.2.1", clock.now))
        svc.step()
        assert len(saves) == 1
        interval = 0.5 / SAVE_SHARE
        assert svc._save_interval == interval
        clock.now += interval / 2
        append(log, dovecot_login("192.0.2.2", clock.now))
        svc.step()
        assert len(saves) == 1  # too soon for another slow snapshot
        clock.now += interval / 2 + 0.1
        svc.step()
        assert len(saves) == 2
    finally:
        svc.shutdown()
