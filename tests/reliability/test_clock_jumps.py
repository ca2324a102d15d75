"""The wall clock jumps forward and back under a running core loop.

In-process, with an injected fake clock and the real tail and lmdb table,
each step driven by the test.  Forward: everything due expires (the daemon
cannot know better) and new logins are granted.  Back: no grant outlives
``now + grace`` (``now + max_session`` while its session is open: a day's
jump back must not mean a day's extra relaying), and logins stamped "in the
future" count from now.
"""

from __future__ import annotations

import time

import pytest
from reliability_support import map_keys
from support import append, dovecot_login, write_config

from popbsmtp import config
from popbsmtp.daemon.service import Service

GRACE = 600.0
MAX_SESSION = 7200.0  # a Dovecot login holds its address while its session is open
DAY = 86400.0


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def service(pf_tmp):
    path = write_config(pf_tmp, grace="10m", max_session="2h", poll_interval="1h")
    settings = config.load(str(path))
    (pf_tmp / "mail.log").touch()
    clock = FakeClock(time.time())
    svc = Service(settings, clock=clock)
    svc.start()
    yield svc, clock, pf_tmp
    svc.shutdown()


def expiry(svc, ip):
    grant = svc.table.get(ip)
    return None if grant is None else grant.expires


def test_clock_jumps_forward(service):
    svc, clock, tmp = service
    start = clock.now
    append(tmp / "mail.log", dovecot_login("192.0.2.1", start))
    svc.step()
    assert expiry(svc, "192.0.2.1") == pytest.approx(start + MAX_SESSION, abs=1)
    clock.now = start + DAY
    svc.step()
    assert "192.0.2.1" not in svc.table and map_keys(f"lmdb:{tmp}/pbs") == set()
    append(tmp / "mail.log", dovecot_login("192.0.2.2", start))  # stamped before the jump
    append(tmp / "mail.log", dovecot_login("192.0.2.3", clock.now))
    svc.step()
    assert svc.table.keys() == {"192.0.2.3"} == map_keys(f"lmdb:{tmp}/pbs")


def test_clock_jumps_back(service):
    svc, clock, tmp = service
    start = clock.now
    svc.table.grant("192.0.2.1", start + GRACE, "manual", "add")  # a plain grace grant
    append(tmp / "mail.log", dovecot_login("192.0.2.2", start))  # held by an open session
    svc.step()
    assert expiry(svc, "192.0.2.2") == pytest.approx(start + MAX_SESSION, abs=1)
    clock.now = start - DAY
    svc.step()
    assert expiry(svc, "192.0.2.1") == pytest.approx(clock.now + GRACE, abs=1)
    assert expiry(svc, "192.0.2.2") == pytest.approx(clock.now + MAX_SESSION, abs=1)
    append(tmp / "mail.log", dovecot_login("192.0.2.3", start))  # "in the future" now
    svc.step()
    assert expiry(svc, "192.0.2.3") == pytest.approx(clock.now + MAX_SESSION, abs=1)
    assert map_keys(f"lmdb:{tmp}/pbs") == {"192.0.2.1", "192.0.2.2", "192.0.2.3"}
    clock.now += GRACE + 1
    svc.step()
    assert svc.table.keys() == {"192.0.2.2", "192.0.2.3"} == map_keys(f"lmdb:{tmp}/pbs")
    clock.now += MAX_SESSION
    svc.step()
    assert len(svc.table) == 0 and map_keys(f"lmdb:{tmp}/pbs") == set()


def test_clock_went_back_while_stopped(pf_tmp):
    settings = config.load(str(write_config(pf_tmp, grace="10m", max_session="2h")))
    now = time.time()
    append(pf_tmp / "mail.log", dovecot_login("192.0.2.9", now))
    first = Service(settings, clock=FakeClock(now))
    first.start()
    assert expiry(first, "192.0.2.9") == pytest.approx(now + MAX_SESSION, abs=1)
    first.shutdown()
    second = Service(settings, clock=FakeClock(now - DAY))
    second.start()
    try:  # sessions are not saved: at start a restored grant gets grace from now
        assert expiry(second, "192.0.2.9") == pytest.approx(now - DAY + GRACE, abs=1)
        assert map_keys(f"lmdb:{pf_tmp}/pbs") == {"192.0.2.9"}
    finally:
        second.shutdown()
