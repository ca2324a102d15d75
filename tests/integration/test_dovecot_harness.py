"""Prove that DovecotServer yields genuine Dovecot log lines with the right client IPs.

These tests exercise the harness, not popbsmtp.  They need root, Dovecot and rsyslog,
and fail (never skip) when any is missing, so a broken CI image cannot hide them.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Callable, Iterator

import pytest
from dovecot_server import FORGED_LOGIN_USER, HOSTILE_USERS, DovecotServer
from mail_clients import (
    connect_without_login,
    imap_login,
    imap_session,
    pop3_login,
    pop3_login_bytes,
    pop3_session,
)

pytestmark = pytest.mark.integration

RFC3339_ENVELOPE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d \S+ dovecot: "
TRADITIONAL_ENVELOPE = r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ dovecot: "
OWN_LOG_PREFIX = r"[A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d "
# Dovecot writes user-controlled text inside user=<...> without escaping '>' or ',', so
# the trustworthy fields are the ones anchored at the end of the line.
LOGIN_TAIL = r", rip={rip}, lip={lip}, mpid=(\d+)(?:, secured)?, session=<[A-Za-z0-9+/]+>$"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    with DovecotServer(tmp_path_factory.mktemp("syslog")) as running:
        yield running


def _login_function(protocol: str) -> Callable[..., bool]:
    return pop3_login if protocol == "pop3" else imap_login


def _port(server: DovecotServer, protocol: str) -> int:
    return server.pop3_port if protocol == "pop3" else server.imap_port


def _local_ip(source_ip: str) -> str:
    return "::1" if ":" in source_ip else "127.0.0.1"


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
@pytest.mark.parametrize("source_ip", ["127.0.0.5", "127.0.0.6", "::1"])
def test_successful_login_logs_login_and_logout(
    server: DovecotServer, protocol: str, source_ip: str
) -> None:
    since = server.log_offset()
    login = _login_function(protocol)
    assert login(_port(server, protocol), "alice", "alice-pw", (source_ip, 0))

    line = server.wait_for_log(f"rip={source_ip}, ", since=since)
    prefix = f"{RFC3339_ENVELOPE}{protocol}-login: Login: user=<alice>, method=PLAIN"
    tail = LOGIN_TAIL.format(rip=re.escape(source_ip), lip=re.escape(_local_ip(source_ip)))
    match = re.fullmatch(prefix + tail, line)
    assert match, line
    mpid = match.group(1)

    logout = server.wait_for_log(f"{protocol}(alice)<{mpid}><", since=since)
    assert ": Disconnected: Logged out " in logout


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_failed_login_logs_no_login_line(server: DovecotServer, protocol: str) -> None:
    since = server.log_offset()
    login = _login_function(protocol)
    assert not login(_port(server, protocol), "alice", "wrong", ("127.0.0.7", 0))

    line = server.wait_for_log("rip=127.0.0.7, ", since=since)
    assert f"{protocol}-login: Disconnected: " in line
    assert "(auth failed, 1 attempts in " in line
    assert not [x for x in server.read_log(since) if "Login:" in x and "127.0.0.7" in x]


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
@pytest.mark.parametrize("user", HOSTILE_USERS)
def test_hostile_user_name_cannot_move_the_logged_rip(
    server: DovecotServer, protocol: str, user: str
) -> None:
    since = server.log_offset()
    port = _port(server, protocol)
    login = _login_function(protocol)
    assert login(port, user, server.users[user], ("127.0.0.6", 0))
    assert not login(port, user, "wrong", ("127.0.0.7", 0))

    # Successful logins show the name as auth normalised it: lowercased, not escaped.
    logged = f"{protocol}-login: Login: user=<{user.lower()}>, method=PLAIN"
    line = server.wait_for_log(logged, since=since)
    tail = LOGIN_TAIL.format(rip=re.escape("127.0.0.6"), lip=re.escape("127.0.0.1"))
    assert re.fullmatch(RFC3339_ENVELOPE + re.escape(logged) + tail, line), line

    failed = server.wait_for_log("rip=127.0.0.7, lip=127.0.0.1, session=<", since=since)
    assert re.match(RFC3339_ENVELOPE + f"{protocol}-login: Disconnected: ", failed), failed
    assert "(auth failed, " in failed


def test_control_characters_in_user_names_are_replaced(server: DovecotServer) -> None:
    since = server.log_offset()
    assert not pop3_login(server.pop3_port, "ctl\x01x\ty", "pw", ("127.0.0.7", 0))
    # AUTHENTICATE PLAIN carries a raw LF, which would forge a whole line if unescaped.
    newline_user = "nl\n" + FORGED_LOGIN_USER
    assert not imap_login(server.imap_port, newline_user, "pw", ("::1", 0), mechanism="PLAIN")

    assert "user=<ctl?x?y>, " in server.wait_for_log("user=<ctl", since=since)
    # Even a failed login logs the name as auth normalised it (lowercased), with control
    # characters as "?" and cut to 80 characters including the "...".
    logged = (
        "user=<nl?login: user=<evil>, method=plain, rip=6.6.6.6, lip=1.1.1.1, mpid=1, sessio...>"
        ", method=PLAIN, rip=::1, lip=::1, secured, session=<"
    )
    line = server.wait_for_log(logged, since=since)
    assert re.match(RFC3339_ENVELOPE + "imap-login: Disconnected: ", line), line


def test_non_ascii_user_names(server: DovecotServer) -> None:
    since = server.log_offset()
    assert not pop3_login(server.pop3_port, "u\u2028x\u0085y", "pw", ("127.0.0.7", 0))
    assert not pop3_login_bytes(server.pop3_port, b"bad\xff\xfeutf", b"pw", ("127.0.0.7", 0))

    # Invalid UTF-8 becomes "?", but Unicode line separators pass through untouched
    # (by rsyslog too), so a reader must split on LF only.
    assert "user=<bad??utf>, " in server.wait_for_log("user=<bad", since=since)
    assert "user=<u\u2028x\u0085y>, " in server.wait_for_log("user=<u\u2028", since=since)


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_dropped_session_logs_connection_closed(server: DovecotServer, protocol: str) -> None:
    since = server.log_offset()
    login = _login_function(protocol)
    assert login(_port(server, protocol), "bob@example.org", "bob-pw", logout=False)

    line = server.wait_for_log(f"{protocol}(bob@example.org)<", since=since)
    assert ": Disconnected: Connection closed" in line


def test_open_sessions_and_bare_connections(server: DovecotServer) -> None:
    since = server.log_offset()
    with imap_session(server.imap_port, "Carol.Mixed-Case", "carol-pw") as imap:
        assert imap.select()[0] == "OK"
        server.wait_for_log("imap-login: Login: user=<carol.mixed-case>, ", since=since)
    with pop3_session(server.pop3_port, "alice", "alice-pw", ("::1", 0)) as pop3:
        assert pop3.stat() == (0, 0)
    connect_without_login(server.imap_port, ("127.0.0.8", 0))

    server.wait_for_log("imap(carol.mixed-case)<", since=since)
    server.wait_for_log("pop3(alice)<", since=since)
    line = server.wait_for_log("rip=127.0.0.8, ", since=since)
    assert "imap-login: Disconnected: Connection closed (no auth attempts in " in line


def test_traditional_syslog_format(tmp_path: Path) -> None:
    with DovecotServer(tmp_path, traditional=True) as server:
        assert server.syslog_path == server.traditional_log_path
        assert imap_login(server.imap_port, "alice", "alice-pw", ("127.0.0.6", 0))
        line = server.wait_for_log("imap-login: Login: ")
    assert re.match(TRADITIONAL_ENVELOPE + r"imap-login: Login: user=<alice>, ", line), line


def test_dovecot_own_log_format(tmp_path: Path) -> None:
    with DovecotServer(tmp_path, syslog=False) as server:
        assert server.syslog_path is None
        assert pop3_login(server.pop3_port, "alice", "alice-pw", ("::1", 0))
        line = server.wait_for_log("pop3-login: Info: Login: ")
        logout = server.wait_for_log("pop3(alice)<")
    assert re.match(OWN_LOG_PREFIX + r"pop3-login: Info: Login: user=<alice>, ", line), line
    assert ": Info: Disconnected: Logged out top=0/0, " in logout


@pytest.mark.parametrize("program", ["dovecot", "rsyslogd"])
def test_missing_program_fails_instead_of_skipping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, program: str
) -> None:
    real_which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name, **kw: None if name == program else real_which(name, **kw)
    )
    with pytest.raises(RuntimeError, match=f"{program} not found; install"):
        DovecotServer(tmp_path).start()


def test_stop_leaves_no_processes(tmp_path: Path) -> None:
    with DovecotServer(tmp_path) as server:
        assert imap_login(server.imap_port, "alice", "alice-pw", logout=False)
        pids = server.process_ids()
        assert len(pids) >= 5  # rsyslogd, master, log, config, anvil, auth, ...
    assert not [pid for pid in pids if _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
