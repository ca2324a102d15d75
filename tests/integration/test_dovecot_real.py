"""Real Dovecot output through ``popbsmtp test --json``: exactly the right clients.

A real Dovecot (POP3 and IMAP, loopback) logs through a real rsyslogd (RFC 3339
and traditional files) or to its own ``log_path``.  Clients log in from several
127.0.0.N and ::1, some with hostile user names that try to forge later fields;
others fail (wrong password, unknown user, hostile names).  ``popbsmtp test
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
from support import popbsmtp, wait_for, write_config

pytestmark = pytest.mark.integration

GOOD: List[Tuple[str, str, str]] = [  # (protocol, source address, user)
    ("pop3", "127.0.0.5", "alice"),
    ("imap", "127.0.0.6", "bob@example.org"),
    ("imap", "::1", "Carol.Mixed-Case"),
    *[("pop3" if i % 2 else "imap", "127.0.0.8", name) for i, name in enumerate(HOSTILE_USERS)],
]
BAD_SOURCE = "127.0.0.7"  # only failed logins and bare connects come from here
BAD_SOURCE6 = "::1"  # also used by a good login: failures must not add anything else


def _log_in(server: DovecotServer, protocol: str, source: str, user: str, password: str) -> bool:
    login = pop3_login if protocol == "pop3" else imap_login
    port = server.pop3_port if protocol == "pop3" else server.imap_port
    return login(port, user, password, (source, 0))


def _exercise(server: DovecotServer) -> Set[str]:
    """Run the sessions; return the addresses that logged in successfully."""
    users = server.users
    for protocol, source, user in GOOD:
        assert _log_in(server, protocol, source, user, users[user]), f"{user} from {source}"
    assert not _log_in(server, "pop3", BAD_SOURCE, "alice", "wrong")
    assert not _log_in(server, "imap", BAD_SOURCE6, "nosuchuser", "x")
    for i, name in enumerate(HOSTILE_USERS):  # every hostile name fails once too
        assert not _log_in(server, "imap" if i % 2 else "pop3", BAD_SOURCE, name, "wrong")
    connect_without_login(server.pop3_port, (BAD_SOURCE, 0))
    assert pop3_login(server.pop3_port, "alice", users["alice"], ("127.0.0.9", 0))
    # Every session has logged out before the server is stopped (which flushes the rest).
    wait_for(
        lambda: sum("Logged out" in line for line in server.read_log()) >= len(GOOD) + 1,
        timeout=10.0,
        what=f"{len(GOOD) + 1} logouts in {server.active_log}",
    )
    return {"127.0.0.5", "127.0.0.6", "::1", "127.0.0.8", "127.0.0.9"}


def _run_test(tmp: Path, log: Path) -> Tuple[List[Dict], Dict]:
    config = write_config(tmp, logfile=log, ignore_networks="none")
    result = popbsmtp("test", "-c", str(config), "--json", "--profile", "auto", str(log))
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records and "summary" in records[-1], result.stdout
    return records[:-1], records[-1]["summary"]


@pytest.fixture(scope="module", params=["rfc3339", "traditional", "own-log"])
def dovecot_log(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Tuple[Path, Set]]:
    mode = request.param
    work = tmp_path_factory.mktemp(f"dovecot-{mode}")
    with DovecotServer(work, syslog=mode != "own-log", traditional=mode == "traditional") as srv:
        expected = _exercise(srv)
    yield srv.active_log, expected  # stopped: the file is complete


def test_authorizes_exactly_the_successful_logins(dovecot_log, tmp_path: Path) -> None:
    log, expected = dovecot_log
    events, summary = _run_test(tmp_path, log)
    granted = {e["ip"] for e in events if e["event"] == "login" and e["ignored"] is None}
    assert granted == expected
    assert "6.6.6.6" not in {e["raw_ip"] for e in events}
    assert all(e["profile"] == "dovecot" for e in events)
    assert summary["profiles_matched"] == ["dovecot"]
    assert summary["unparseable"] == 0
    assert summary["unrecognised_login_lines"] == [], "a login line matched no rule"
    logins = [e for e in events if e["event"] == "login"]
    assert len(logins) == len(GOOD) + 1  # one per successful session, failures none


def test_every_logout_is_recognised_and_tied_to_its_login(dovecot_log, tmp_path: Path) -> None:
    log, _ = dovecot_log
    events, summary = _run_test(tmp_path, log)
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
    from popbsmtp.parse.matcher import Matcher
    from popbsmtp.policy import UNKNOWN_LOGOUT, Policy, apply
    from popbsmtp.profiles import select

    log, expected = dovecot_log
    matcher = Matcher(select(["auto"]))
    policy = Policy(60.0, 86400.0, IgnoredNetworks.none(), matcher.profiles)
    table = GrantTable()
    last = 0.0
    with open(log, "rb") as handle:
        for found in matcher.match_block(handle.read(), now=2e9):
            last = max(last, found.time)
            for decision in policy.decide(found, found.time, table):
                assert decision.kind != UNKNOWN_LOGOUT, "logout of an unknown session"
                apply(decision, table)
    assert policy.sessions.open_sessions() == 0
    assert table.keys() == expected
    assert all(grant.expires <= last + 60.0 for grant in table)
