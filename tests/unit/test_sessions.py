"""Session tracking: hold while open, grace from logout, max_session cap, two-line joins.

Driven through :class:`popbsmtp.policy.Policy` (decide, then apply), the one
place the daemon and ``popbsmtp test`` ask.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Tuple

import pytest
from support import append, rfc3339, write_config

from popbsmtp import config
from popbsmtp.daemon.service import Service
from popbsmtp.grants import GrantTable
from popbsmtp.parse.addresses import IgnoredNetworks
from popbsmtp.parse.matcher import Login
from popbsmtp.policy import GRANT, HOLD, RELEASE, Policy, apply, sessions
from popbsmtp.policy.sessions import PRUNE_EVERY
from popbsmtp.profiles import AUTH, CONNECT, LOGIN, LOGOUT, registry

GRACE = 60.0
MAX = 3600.0


def ev(profile: str, rule: str, event: str, t: float, ip: Optional[str] = None,
       session: Optional[str] = None) -> Login:  # fmt: skip
    return Login(t, ip, ip, profile, rule, event, session)


class Tracker:
    """The session side of a Policy, with decisions applied as the daemon applies them."""

    def __init__(self, grace: float = GRACE, max_session: float = MAX) -> None:
        self.policy = Policy(grace, max_session, IgnoredNetworks.none(), list(registry().values()))

    def _run(self, item: Login, now: float, table: GrantTable) -> list:
        decisions = self.policy.decide(item, now, table)
        for decision in decisions:
            apply(decision, table)
        return decisions

    def login(self, item: Login, now: float, table: GrantTable) -> float:
        decisions = self._run(item, now, table)
        return next(d.until for d in decisions if d.kind in (GRANT, HOLD))

    def logout(self, item: Login, now: float, table: GrantTable) -> Optional[str]:
        decisions = self._run(item, now, table)
        return next((d.ip for d in decisions if d.kind == RELEASE), None)

    def __getattr__(self, name: str) -> object:
        return getattr(self.policy.sessions, name)


def login(tracker: Tracker, table: GrantTable, item: Login, now: float) -> float:
    assert item.ip is not None
    return tracker.login(item, now, table)


def make() -> Tuple[Tracker, GrantTable]:
    return Tracker(), GrantTable()


def test_dovecot_session_is_held_until_logout_then_grace_starts_there() -> None:
    tracker, table = make()
    assert login(tracker, table, ev("dovecot", "login", LOGIN, 100, "192.0.2.1", "S1"), 100) == (
        100 + MAX
    )
    assert tracker.open_sessions() == 1
    ended = tracker.logout(ev("dovecot", "logout", LOGOUT, 500, None, "S1"), 500, table)
    assert ended == "192.0.2.1"
    grant = table.get("192.0.2.1")
    assert grant is not None and grant.expires == 500 + GRACE
    assert tracker.open_sessions() == 0
    assert (tracker.stats.opened, tracker.stats.closed) == (1, 1)
    assert table.expire(500 + GRACE) == ["192.0.2.1"]


def test_lost_logout_expires_at_max_session() -> None:
    tracker, table = make()
    login(tracker, table, ev("dovecot", "login", LOGIN, 100, "192.0.2.1", "S1"), 100)
    assert table.expire(100 + MAX - 1) == []
    assert table.expire(100 + MAX) == ["192.0.2.1"]


def test_other_open_session_keeps_the_address_held() -> None:
    tracker, table = make()
    login(tracker, table, ev("dovecot", "login", LOGIN, 100, "192.0.2.1", "S1"), 100)
    login(tracker, table, ev("dovecot", "login", LOGIN, 200, "192.0.2.1", "S2"), 200)
    tracker.logout(ev("dovecot", "logout", LOGOUT, 300, None, "S2"), 300, table)
    grant = table.get("192.0.2.1")
    assert grant is not None and grant.expires == 100 + MAX  # S1 is still open: its own cap
    tracker.logout(ev("dovecot", "logout", LOGOUT, 400, None, "S1"), 400, table)
    grant = table.get("192.0.2.1")
    assert grant is not None and grant.expires == 400 + GRACE


def test_logout_never_shortens_a_grant_it_did_not_set() -> None:
    tracker, table = make()
    login(tracker, table, ev("dovecot", "login", LOGIN, 100, "192.0.2.1", "S1"), 100)
    table.remove("192.0.2.1")
    table.grant("192.0.2.1", 100 + 2 * MAX, "manual", "add")  # admin's longer grant
    tracker.logout(ev("dovecot", "logout", LOGOUT, 200, None, "S1"), 200, table)
    grant = table.get("192.0.2.1")
    assert grant is not None and grant.expires == 100 + 2 * MAX


def test_untracked_login_of_the_same_address_is_kept_after_logout() -> None:
    tracker, table = make()
    login(tracker, table, ev("dovecot", "login", LOGIN, 100, "192.0.2.1", "S1"), 100)
    login(tracker, table, ev("qpopper", "login", LOGIN, 150, "192.0.2.1"), 150)
    tracker.logout(ev("dovecot", "logout", LOGOUT, 160, None, "S1"), 160, table)
    grant = table.get("192.0.2.1")
    assert grant is not None and grant.expires == 160 + GRACE  # >= 150 + GRACE


def test_unknown_logout_changes_nothing_and_is_counted() -> None:
    tracker, table = make()
    table.grant("192.0.2.1", 1000, "x", "y")
    assert tracker.logout(ev("dovecot", "logout", LOGOUT, 100, None, "nope"), 100, table) is None
    assert tracker.stats.unknown_logouts == 1
    grant = table.get("192.0.2.1")
    assert grant is not None and grant.expires == 1000


def test_courier_sessions_count_per_address() -> None:
    tracker, table = make()
    ip = "2001:db8::1"
    login(tracker, table, ev("courier", "login", LOGIN, 100, ip), 100)
    login(tracker, table, ev("courier", "login", LOGIN, 110, ip), 110)  # a second connection
    tracker.logout(ev("courier", "logout", LOGOUT, 120, ip), 120, table)
    assert table.get(ip).expires == 110 + MAX  # type: ignore[union-attr]
    tracker.logout(ev("courier", "logout", LOGOUT, 130, ip), 130, table)
    assert table.get(ip).expires == 130 + GRACE  # type: ignore[union-attr]


def test_uw_logout_by_address() -> None:
    tracker, table = make()
    login(tracker, table, ev("uw", "imap-login", LOGIN, 100, "192.0.2.4"), 100)
    assert tracker.logout(ev("uw", "logout", LOGOUT, 140, "192.0.2.4"), 140, table)
    assert table.get("192.0.2.4").expires == 140 + GRACE  # type: ignore[union-attr]


def test_cyrus_reused_pid_ends_the_previous_session() -> None:
    tracker, table = make()
    pid = "mail/cyrus/imap[4711]"
    login(tracker, table, ev("cyrus", "login", LOGIN, 100, "192.0.2.1", pid), 100)
    login(tracker, table, ev("cyrus", "login", LOGIN, 200, "192.0.2.2", pid), 200)
    assert table.get("192.0.2.1").expires == 200 + GRACE  # type: ignore[union-attr]
    tracker.logout(ev("cyrus", "logout", LOGOUT, 300, None, pid), 300, table)
    assert table.get("192.0.2.2").expires == 300 + GRACE  # type: ignore[union-attr]
    assert tracker.open_sessions() == 0
    assert (tracker.stats.opened, tracker.stats.closed, tracker.stats.expired) == (2, 2, 0)


def test_servers_without_logouts_get_plain_grace() -> None:
    tracker, table = make()
    assert login(tracker, table, ev("qpopper", "login", LOGIN, 100, "192.0.2.1"), 100) == (
        100 + GRACE
    )
    assert tracker.window(ev("qpopper", "login", LOGIN, 100, "192.0.2.1")) == GRACE
    assert tracker.window(ev("dovecot", "login", LOGIN, 100, "192.0.2.1", "S")) == MAX


def test_two_line_form_joined_by_pid() -> None:
    tracker, _ = make()
    pid = "mail/popa3d[901]"
    assert tracker.resolve(ev("popa3d", "connect", CONNECT, 100, "192.0.2.3", pid)) is None
    joined = tracker.resolve(ev("popa3d", "auth", AUTH, 101, None, pid))
    assert joined is not None
    assert (joined.event, joined.ip, joined.rule) == (LOGIN, "192.0.2.3", "auth")
    # The connect is consumed: a second auth line of that pid grants nothing.
    assert tracker.resolve(ev("popa3d", "auth", AUTH, 102, None, pid)) is None


def test_two_line_auth_without_connect_or_too_late_grants_nothing() -> None:
    tracker, _ = make()
    assert tracker.resolve(ev("popa3d", "auth", AUTH, 100, None, "mail/popa3d[1]")) is None
    tracker.resolve(ev("popa3d", "connect", CONNECT, 100, "192.0.2.3", "mail/popa3d[2]"))
    assert tracker.resolve(ev("popa3d", "auth", AUTH, 101 + MAX, None, "mail/popa3d[2]")) is None
    # another profile's pid namespace is separate
    tracker.resolve(ev("popa3d", "connect", CONNECT, 100, "192.0.2.3", "mail/x[3]"))
    assert tracker.resolve(ev("spop3d", "auth", AUTH, 101, None, "mail/x[3]")) is None
    assert tracker.stats.unjoined == 3


def test_stale_sessions_are_pruned() -> None:
    tracker, table = make()
    for n in range(PRUNE_EVERY):
        login(tracker, table, ev("dovecot", "login", LOGIN, 0, "192.0.2.1", f"S{n}"), 0)
    for n in range(PRUNE_EVERY):
        late = ev("dovecot", "login", LOGIN, MAX + 1, "192.0.2.2", f"L{n}")
        login(tracker, table, late, MAX + 1)
    assert tracker.stats.expired == PRUNE_EVERY
    assert tracker.open_sessions() == PRUNE_EVERY


def test_daemon_core_loop_holds_until_the_logged_logout(tmp_path: Path) -> None:
    """Service.handle() end to end: real Dovecot line shapes, fake clock, memory map."""
    now = time.time()
    log = tmp_path / "mail.log"
    settings = config.load(str(write_config(tmp_path, grace="60s", max_session="1h")))
    stamp = rfc3339(now - 10)
    append(log, f"{stamp} mail dovecot: {CAPTURED_LOGIN}\n")
    svc = Service(settings, clock=lambda: now, dry_run=True)
    svc.start()
    try:
        assert svc.table.get("127.0.0.5").expires == pytest.approx(now - 10 + 3600, abs=1e-3)
        append(log, f"{rfc3339(now - 5)} mail dovecot: {CAPTURED_LOGOUT}\n")
        svc.step()
        assert svc.table.get("127.0.0.5").expires == pytest.approx(now - 5 + 60, abs=1e-3)
        assert svc.policy.sessions.open_sessions() == 0
    finally:
        svc.shutdown()


CAPTURED_LOGIN = (
    "pop3-login: Login: user=<alice>, method=PLAIN, rip=127.0.0.5, lip=127.0.0.1, mpid=26052, "
    "session=<BfLevjthna1/AAAF>"
)
CAPTURED_LOGOUT = (
    "pop3(alice)<26052><BfLevjthna1/AAAF>: Disconnected: Logged out top=0/0, retr=0/0, del=0/0, "
    "size=0"
)


# -- the compact store: ids hashed to ints, a queue of (id, start), positions per address --


def test_sessions_ending_in_any_order_keep_the_newest_open_hold() -> None:
    tracker, table = make()
    ip = "192.0.2.8"
    for n, start in enumerate([100, 200, 300]):
        login(tracker, table, ev("dovecot", "login", LOGIN, start, ip, f"S{n}"), start)
    tracker.logout(ev("dovecot", "logout", LOGOUT, 310, None, "S2"), 310, table)  # newest first
    assert table.get(ip).expires == 200 + MAX  # type: ignore[union-attr]
    tracker.logout(ev("dovecot", "logout", LOGOUT, 320, None, "S0"), 320, table)
    assert table.get(ip).expires == 200 + MAX  # type: ignore[union-attr]
    tracker.logout(ev("dovecot", "logout", LOGOUT, 330, None, "S1"), 330, table)
    assert table.get(ip).expires == 330 + GRACE  # type: ignore[union-attr]
    assert tracker.open_sessions() == 0
    # Ended sessions are unknown now: a repeated logout changes nothing.
    assert tracker.logout(ev("dovecot", "logout", LOGOUT, 340, None, "S1"), 340, table) is None
    assert tracker.stats.unknown_logouts == 1
    assert table.get(ip).expires == 330 + GRACE  # type: ignore[union-attr]


def test_logout_of_a_session_forgotten_at_max_session_is_unknown() -> None:
    tracker, table = make()
    login(tracker, table, ev("dovecot", "login", LOGIN, 100, "192.0.2.1", "S1"), 100)
    login(tracker, table, ev("dovecot", "login", LOGIN, 100 + MAX, "192.0.2.2", "S2"), 100 + MAX)
    assert tracker.stats.expired == 1 and tracker.open_sessions() == 1
    late = ev("dovecot", "logout", LOGOUT, 101 + MAX, None, "S1")
    assert tracker.logout(late, 101 + MAX, table) is None
    assert tracker.stats.unknown_logouts == 1


def test_clock_going_back_neither_forgets_nor_lengthens_sessions() -> None:
    tracker, table = make()
    login(tracker, table, ev("dovecot", "login", LOGIN, 5000, "192.0.2.1", "S1"), 5000)
    # The clock jumps back an hour: a login "from the future" starts at now, not later.
    now = 5000 - 3600
    assert login(tracker, table, ev("dovecot", "login", LOGIN, 5000, "192.0.2.2", "S2"), now) == (
        now + MAX
    )
    assert tracker.open_sessions() == 2  # S1 is not forgotten by the jump
    tracker.logout(ev("dovecot", "logout", LOGOUT, 5001, None, "S1"), now, table)
    assert table.get("192.0.2.1").expires == now + GRACE  # type: ignore[union-attr]


def test_a_hash_collision_only_ever_ends_a_session_early(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions, "SID_BITS", 0)  # every session id collides
    tracker, table = make()
    login(tracker, table, ev("dovecot", "login", LOGIN, 100, "192.0.2.1", "S1"), 100)
    login(tracker, table, ev("dovecot", "login", LOGIN, 200, "192.0.2.2", "S2"), 200)
    assert table.get("192.0.2.1").expires == 200 + GRACE  # type: ignore[union-attr]
    assert table.get("192.0.2.2").expires == 200 + MAX  # type: ignore[union-attr]
    # S1's logout (already ended) is taken for S2's: S2 ends early, never later.
    assert tracker.logout(ev("dovecot", "logout", LOGOUT, 300, None, "S1"), 300, table)
    assert table.get("192.0.2.2").expires == 300 + GRACE  # type: ignore[union-attr]
    # Kind "ip" keeps several sessions under one id, but never across addresses.
    login(tracker, table, ev("courier", "login", LOGIN, 400, "192.0.2.3"), 400)
    login(tracker, table, ev("courier", "login", LOGIN, 410, "192.0.2.4"), 410)
    assert table.get("192.0.2.3").expires == 410 + GRACE  # type: ignore[union-attr]
    assert tracker.open_sessions() == 1


def test_the_queue_stays_bounded_while_sessions_come_and_go() -> None:
    tracker, table = make()
    now = 0.0
    for n in range(20 * PRUNE_EVERY):
        now += 0.5
        ip = f"10.0.{n % 200 // 100}.{n % 100}"  # 200 addresses, several sessions each
        login(tracker, table, ev("dovecot", "login", LOGIN, now, ip, f"S{n}"), now)
        if n % 10:  # nine in ten log out
            tracker.logout(ev("dovecot", "logout", LOGOUT, now, None, f"S{n}"), now, table)
    assert tracker.open_sessions() == 2 * PRUNE_EVERY - tracker.stats.expired
    assert tracker.queued() <= 2 * tracker.open_sessions() + PRUNE_EVERY
    for n in range(0, 20 * PRUNE_EVERY, 10):  # the rest log out, in order
        tracker.logout(ev("dovecot", "logout", LOGOUT, now, None, f"S{n}"), now, table)
    assert tracker.open_sessions() == 0
    login(tracker, table, ev("dovecot", "login", LOGIN, now, "192.0.2.1", "last"), now)
    assert tracker.queued() <= 1 + PRUNE_EVERY


def test_session_hold_survives_queue_compaction() -> None:
    tracker, table = make()
    login(tracker, table, ev("dovecot", "login", LOGIN, 10, "192.0.2.1", "keep"), 10)
    login(tracker, table, ev("dovecot", "login", LOGIN, 11, "192.0.2.1", "keep2"), 11)
    for n in range(3 * PRUNE_EVERY):  # churn enough to rebuild the queue
        login(tracker, table, ev("dovecot", "login", LOGIN, 20, "192.0.2.2", f"C{n}"), 20)
        tracker.logout(ev("dovecot", "logout", LOGOUT, 20, None, f"C{n}"), 20, table)
    assert tracker.queued() < PRUNE_EVERY + 10
    tracker.logout(ev("dovecot", "logout", LOGOUT, 30, None, "keep2"), 30, table)
    assert table.get("192.0.2.1").expires == 10 + MAX  # type: ignore[union-attr]
    assert tracker.logout(ev("dovecot", "logout", LOGOUT, 40, None, "keep"), 40, table)
    assert table.get("192.0.2.1").expires == 40 + GRACE  # type: ignore[union-attr]
