"""Real Dovecot output through ``popbsmtp test --json``: exactly the right clients.

A real Dovecot, 2.3 (Debian 12, the machine's) or 2.4 (Debian 13, in the trixie
tree), POP3 and IMAP on loopback, logs through a real rsyslogd (RFC 3339 and
traditional files) or to its own ``log_path``.  Clients log in from several
127.0.0.N and ::1, with PLAIN, LOGIN, APOP and CRAM-MD5, after STARTTLS or not,
one session held open meanwhile, some with hostile user names that try to forge
later fields; others fail (wrong password, unknown user, hostile names).  ``popbsmtp test
--json --profile auto`` over each resulting file must authorize exactly the
addresses that logged in successfully, recognise every logout, and tie each
logout to its login by session id.  Needs root, Dovecot and rsyslog: a missing
one fails with a message naming .ci/setup (never a skip).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest
from dovecot_server import (
    HOSTILE_USERS,
    DovecotServer,
    connect_without_login,
    imap_login,
    pop3_login,
)
from mail_clients import imap_session
from support import popbsmtp, successful_logins_seen, wait_for, write_config

pytestmark = pytest.mark.integration
VERSIONS = ("2.3", "2.4")

GOOD: List[Tuple[str, str, str]] = [  # (protocol, source address, user)
    ("pop3", "127.0.0.5", "alice"),
    ("imap", "127.0.0.6", "bob@example.org"),
    ("imap", "::1", "Carol.Mixed-Case"),
    *[("pop3" if i % 2 else "imap", "127.0.0.8", name) for i, name in enumerate(HOSTILE_USERS)],
]
# (protocol, source address, user, mechanism, STARTTLS first)
MECHANISMS: List[Tuple[str, str, str, str, bool]] = [
    ("pop3", "127.0.0.10", "alice", "USER", True),
    ("imap", "127.0.0.10", "bob@example.org", "LOGIN", True),
    ("pop3", "127.0.0.11", "alice", "APOP", False),
    ("imap", "127.0.0.11", "alice", "CRAM-MD5", False),
    ("imap", "::1", "alice", "CRAM-MD5", True),
]
HELD = "127.0.0.12"  # an IMAP session open while all the others come and go
SESSIONS = len(GOOD) + len(MECHANISMS) + 2
BAD_SOURCE = "127.0.0.7"  # only failed logins and bare connects come from here
BAD_SOURCE6 = "::1"  # also used by a good login: failures must not add anything else


def _log_in(
    server: DovecotServer, protocol: str, source: str, user: str, password: str, **how: object
) -> bool:
    login = pop3_login if protocol == "pop3" else imap_login
    port = server.pop3_port if protocol == "pop3" else server.imap_port
    return login(port, user, password, (source, 0), **how)  # type: ignore[operator]


def _exercise(server: DovecotServer) -> Set[str]:
    """Run the sessions; return the addresses that logged in successfully."""
    users = server.users
    with imap_session(server.imap_port, "alice", users["alice"], (HELD, 0)) as held:
        for protocol, source, user in GOOD:
            assert _log_in(server, protocol, source, user, users[user]), f"{user} from {source}"
        for protocol, source, user, mechanism, tls in MECHANISMS:
            ok = _log_in(server, protocol, source, user, users[user], mechanism=mechanism, tls=tls)
            assert ok, f"{user} from {source} by {mechanism}, tls={tls}"
            failed = _log_in(server, protocol, BAD_SOURCE, user, "wrong", mechanism=mechanism,
                             tls=tls)  # fmt: skip
            assert not failed, f"{mechanism} with a wrong password"
        assert not _log_in(server, "pop3", BAD_SOURCE, "alice", "wrong")
        assert not _log_in(server, "imap", BAD_SOURCE6, "nosuchuser", "x")
        for i, name in enumerate(HOSTILE_USERS):  # every hostile name fails once too
            assert not _log_in(server, "imap" if i % 2 else "pop3", BAD_SOURCE, name, "wrong")
        connect_without_login(server.pop3_port, (BAD_SOURCE, 0))
        held.noop()
    assert pop3_login(server.pop3_port, "alice", users["alice"], ("127.0.0.9", 0))
    # Every session has logged out before the server is stopped (which flushes the rest).
    wait_for(
        lambda: sum("Logged out" in line for line in server.read_log()) >= SESSIONS,
        timeout=10.0,
        what=f"{SESSIONS} logouts in {server.active_log}",
    )
    return {"127.0.0.5", "127.0.0.6", "::1", "127.0.0.8", "127.0.0.9", "127.0.0.10",
            "127.0.0.11", HELD}  # fmt: skip


def _run_test(tmp: Path, log: Path, fmt: str) -> Tuple[List[Dict], Dict]:
    config = write_config(tmp, logfile=log, ignore_networks="none", log_format=fmt)
    result = popbsmtp("test", "-c", str(config), "--json", "--profile", "auto", str(log))
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records and "summary" in records[-1], result.stdout
    return records[:-1], records[-1]["summary"]


@pytest.fixture(
    scope="module",
    params=[(v, mode) for v in VERSIONS for mode in ("rfc3339", "traditional", "own-log")],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def dovecot_log(
    request: pytest.FixtureRequest, tmp_path_factory
) -> Iterator[Tuple[Path, Set, str]]:
    version, mode = request.param
    work = tmp_path_factory.mktemp(f"dovecot-{version}-{mode}")
    with DovecotServer(work, syslog=mode != "own-log", traditional=mode == "traditional",
                       version=version) as srv:  # fmt: skip
        expected = _exercise(srv)
    # Dovecot's own log_path file is read only as such (log_format = dovecot)
    yield srv.active_log, expected, "dovecot" if mode == "own-log" else "auto"


def test_authorizes_exactly_the_successful_logins(dovecot_log, tmp_path: Path) -> None:
    log, expected, fmt = dovecot_log
    events, summary = _run_test(tmp_path, log, fmt)
    assert successful_logins_seen(events) == expected
    assert "6.6.6.6" not in {e["raw_ip"] for e in events}
    assert all(e["profile"] == "dovecot" for e in events)
    assert summary["profiles_matched"] == ["dovecot"]
    assert summary["unparseable"] == 0
    assert summary["unrecognised_login_lines"] == [], "a login line matched no rule"
    logins = [e for e in events if e["event"] == "login"]
    assert len(logins) == SESSIONS  # one per successful session, failures none
    assert summary["matched"]["dovecot/start"] == summary["matched"]["dovecot/stop"] == 1
    assert summary["suspect"] == 0


def test_every_logout_is_recognised_and_tied_to_its_login(dovecot_log, tmp_path: Path) -> None:
    log, _, fmt = dovecot_log
    events, summary = _run_test(tmp_path, log, fmt)
    lines = log.read_text(encoding="utf-8", errors="replace").split("\n")
    ended = [n for n, line in enumerate(lines, 1) if ">: " in line and "Disconnected" in line]
    logouts = [e for e in events if e["event"] == "logout"]
    assert [e["line"] for e in logouts] == ended
    opened = {e["session"] for e in events if e["event"] == "login"}
    assert {e["session"] for e in logouts} == opened
    assert summary["matched"]["dovecot/logout"] == len(ended)


def test_daemon_sessions_hold_until_logout(dovecot_log, tmp_path: Path) -> None:
    """Replay the real log through the policy: every client's grace starts at its
    logout, so no grant is held for max_session."""
    from popbsmtp.grants import GrantTable
    from popbsmtp.parse.addresses import IgnoredNetworks
    from popbsmtp.parse.envelope import EnvelopeParser
    from popbsmtp.parse.matcher import Matcher
    from popbsmtp.policy import Policy, apply
    from popbsmtp.profiles import select

    log, expected, fmt = dovecot_log
    matcher = Matcher(select(["auto"]), EnvelopeParser(fmt))
    policy = Policy(60.0, 86400.0, IgnoredNetworks.none(), matcher.profiles)
    table = GrantTable()
    last = 0.0
    with open(log, "rb") as handle:
        for found in matcher.match_block(handle.read(), now=2e9):
            last = max(last, found.time)
            for decision in policy.decide(found, found.time, table):
                apply(decision, table)
    assert policy.sessions.open_sessions() == 0
    # Dovecot's log can hold a logout before its login (the processes race to its log
    # process): only such early logouts may find no open session.
    stats = policy.sessions.stats
    assert stats.unknown_logouts == stats.early_logouts
    assert table.keys() == expected
    assert all(grant.expires <= last + 60.0 for grant in table)


@pytest.mark.parametrize(("version", "form"), [("2.4", "Login"), ("2.3", "Logged in")])
def test_forged_lines_in_the_other_versions_form_are_refused(
    version: str, form: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """An unprivileged user's `logger -t dovecot` lines in the form the running
    Dovecot never writes, after its start-up line in the same real rsyslog file."""
    work = tmp_path_factory.mktemp(f"forged-{version}")
    with DovecotServer(work, version=version) as srv:
        for n in range(10):
            message = (f"imap-login: {form}: user=<evil{n}>, method=PLAIN, rip=6.6.6.{n}, "
                       f"lip=127.0.0.1, mpid={n + 1}, session=<forged{n}>")  # fmt: skip
            unprivileged = ["setpriv", "--reuid=4242", "--regid=4242", "--clear-groups"]
            srv.run_inside([*unprivileged, "logger", "-t", "dovecot", "-p", "mail.info", "--",
                            message])  # fmt: skip
        assert pop3_login(srv.pop3_port, "alice", srv.users["alice"], ("127.0.0.5", 0))
        srv.wait_for_log("pop3(alice)<")
    lines = srv.read_log()
    assert sum("rip=6.6.6." in line for line in lines) == 10
    events, summary = _run_test(tmp_path, srv.active_log, "auto")
    assert {e["ip"] for e in events if e["event"] == "login"} == {"127.0.0.5"}
    assert summary["suspect"] == 10
