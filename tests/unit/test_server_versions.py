"""A server's known version decides which login form is genuine; a logout logged
before its login leaves nothing held; a server's own start-up or shutdown line ends
every open session.

Dovecot wrote ``Login:`` up to 2.3 and ``Logged in:`` from 2.4 on.  Once a log names
the version (the master's start-up line), a login line in the other version's form was
not written by that server: it is refused and counted as suspect.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import pytest
from support import append, rfc3339, write_config

from popbsmtp import config
from popbsmtp.daemon.service import Service
from popbsmtp.grants import GrantTable
from popbsmtp.parse.addresses import IgnoredNetworks
from popbsmtp.parse.matcher import Login, Matcher
from popbsmtp.policy import GRANT, HOLD, RELEASE, UNKNOWN_LOGOUT, Policy, apply
from popbsmtp.profiles import SERVER, registry, select

NOW = time.mktime((2026, 12, 5, 12, 0, 0, 0, 0, -1))
STAMP = "Dec  5 02:02:39"
START_24 = "master: Dovecot v2.4.1-4 (7d8c0e5759) starting up for pop3, imap (core dumps disabled)"
START_23 = "master: Dovecot v2.3.19.1 (9b53102964) starting up for pop3, imap (core dumps disabled)"


def line(message: str, host: str = "mail") -> bytes:
    return f"{STAMP} {host} dovecot: {message}".encode()


def login(form: str, ip: str, session: str = "AAAAAAAAAAAAAAAA") -> str:
    return (f"imap-login: {form}: user=<x>, method=PLAIN, rip={ip}, lip=127.0.0.1, mpid=1, "
            f"session=<{session}>")  # fmt: skip


def granted(matcher: Matcher, lines: List[bytes]) -> List[Optional[str]]:
    found = [matcher.match(raw, NOW) for raw in lines]
    return [f.ip for f in found if f is not None and f.event == "login"]


def test_start_line_names_the_version_and_the_form() -> None:
    dovecot = registry()["dovecot"]
    assert dovecot.form_of("2.4") == "2.4"
    assert dovecot.form_of("2.3") == "2.3"
    assert dovecot.form_of("2.1") == "2.3"  # 2.1 to 2.3 write Login:
    assert dovecot.form_of("3.0") == "2.4"
    found = Matcher(select(["auto"])).match(line(START_24), NOW)
    assert found is not None and found.event == SERVER and found.rule == "start"


def test_ten_forged_old_form_lines_in_a_24_log_are_refused_after_start() -> None:
    matcher = Matcher(select(["auto"]))
    forged = [line(login("Login", f"6.6.6.{n}")) for n in range(10)]
    genuine = line(login("Logged in", "192.0.2.1"))
    assert granted(matcher, [line(START_24), *forged, genuine]) == ["192.0.2.1"]
    assert matcher.stats.suspect == 10
    assert "dovecot/login" not in matcher.stats.matched


def test_new_form_is_suspect_after_a_23_start_line() -> None:
    matcher = Matcher(select(["auto"]))
    lines = [line(START_23), line(login("Logged in", "6.6.6.6")), line(login("Login", "192.0.2.2"))]
    assert granted(matcher, lines) == ["192.0.2.2"]
    assert matcher.stats.suspect == 1


def test_unknown_version_accepts_both_forms() -> None:
    matcher = Matcher(select(["auto"]))
    lines = [line(login("Login", "192.0.2.1")), line(login("Logged in", "192.0.2.2"))]
    assert granted(matcher, lines) == ["192.0.2.1", "192.0.2.2"]
    assert matcher.stats.suspect == 0


def test_an_upgrade_restart_switches_the_form() -> None:
    matcher = Matcher(select(["auto"]))
    lines = [
        line(START_23), line(login("Login", "192.0.2.1")),
        line(START_24), line(login("Login", "6.6.6.6")), line(login("Logged in", "192.0.2.2")),
    ]  # fmt: skip
    assert granted(matcher, lines) == ["192.0.2.1", "192.0.2.2"]


def test_the_version_is_per_host() -> None:
    matcher = Matcher(select(["auto"]))
    lines = [line(START_24, "new"), line(login("Login", "192.0.2.3"), "old")]
    assert granted(matcher, lines) == ["192.0.2.3"]
    assert granted(matcher, [line(login("Login", "6.6.6.6"), "new")]) == []


def _policy() -> Policy:
    return Policy(60.0, 3600.0, IgnoredNetworks.none(), select(["auto"]))


def _apply_all(policy: Policy, event: Login, now: float, table: GrantTable) -> List[str]:
    decisions = policy.decide(event, now, table)
    for decision in decisions:
        apply(decision, table)
    return [decision.kind for decision in decisions]


def test_a_logout_logged_before_its_login_holds_nothing() -> None:
    """Seen on real Dovecot 2.4 (own log): the mail process's logout line was written
    before the login process's line of the same session."""
    policy, table = _policy(), GrantTable()
    out = Login(NOW, None, None, "dovecot", "logout", "logout", "s1")
    assert _apply_all(policy, out, NOW, table) == [UNKNOWN_LOGOUT]
    came = Login(NOW, "192.0.2.9", "192.0.2.9", "dovecot", "logged_in", "login", "s1")
    assert _apply_all(policy, came, NOW, table) == [GRANT]  # not held
    assert table.get("192.0.2.9").expires == NOW + 60.0  # grace, not max_session
    assert policy.sessions.open_sessions() == 0
    assert policy.sessions.stats.early_logouts == 1
    # A later session with another id is held as usual.
    again = came._replace(ip="192.0.2.10", raw_ip="192.0.2.10", session="s2")
    assert _apply_all(policy, again, NOW, table) == [HOLD]
    assert table.get("192.0.2.10").expires == NOW + 3600.0


def test_a_server_line_ends_every_open_session_and_grace_starts_there() -> None:
    policy, table = _policy(), GrantTable()
    for n, ip in enumerate(("192.0.2.1", "192.0.2.2")):
        came = Login(NOW, ip, ip, "dovecot", "logged_in", "login", f"s{n}")
        assert _apply_all(policy, came, NOW, table) == [HOLD]
    assert all(grant.expires == NOW + 3600.0 for grant in table)
    stop = Matcher(select(["auto"])).match(
        line("master: Warning: Killed with signal 15 (by pid=1 uid=0 code=kill)"), NOW
    )
    assert stop is not None and stop.event == SERVER
    assert _apply_all(policy, stop._replace(time=NOW + 10), NOW + 10, table) == [RELEASE] * 2
    assert policy.sessions.open_sessions() == 0
    assert {grant.expires for grant in table} == {NOW + 70.0}
    # A logout arriving later for one of them changes nothing.
    out = Login(NOW + 20, None, None, "dovecot", "logout", "logout", "s0")
    assert _apply_all(policy, out, NOW + 20, table) == [UNKNOWN_LOGOUT]
    assert {grant.expires for grant in table} == {NOW + 70.0}
    # With nothing open, a server line decides nothing.
    assert _apply_all(policy, stop, NOW + 30, table) == []


def test_the_daemon_ends_open_sessions_at_the_servers_shutdown_line(tmp_path: Path) -> None:
    """The service loop on a real log file: a Dovecot 2.4 login holds its address,
    the master's SIGTERM line ends the session, and grace counts from that line."""
    now = time.time()
    log = tmp_path / "mail.log"
    settings = config.load(str(write_config(tmp_path, grace="60s", max_session="1h")))
    append(log, f"{rfc3339(now - 10)} mail dovecot: {login('Logged in', '192.0.2.7', 's7')}\n")
    svc = Service(settings, clock=lambda: now, dry_run=True)
    svc.start()
    try:
        assert svc.table.get("192.0.2.7").expires == pytest.approx(now - 10 + 3600, abs=1e-3)
        stop = "master: Warning: Killed with signal 15 (by pid=1 uid=0 code=kill)"
        append(log, f"{rfc3339(now - 5)} mail dovecot: {stop}\n")
        svc.step()
        assert svc.table.get("192.0.2.7").expires == pytest.approx(now - 5 + 60, abs=1e-3)
        assert svc.policy.sessions.open_sessions() == 0
    finally:
        svc.shutdown()
