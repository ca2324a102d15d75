"""A server stopped while clients are logged in: their sessions end, grace starts.

Each real server (Dovecot 2.3 and 2.4, Cyrus 3.6 and 3.10, Courier 5.0 and 5.2)
gets an IMAP session from 127.0.0.20 and a POP3 session from ::1, and is stopped
(SIGTERM, as an init system does) with both still open.  Its real log, replayed
through the session tracker as the daemon does, must leave no session open and no
grant beyond the grace after the last line.  No server logs the end of every
session it stops, so the server's own lines are what ends them: without the
``server`` events the replay leaves sessions open.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import pytest
from courier_server import Courier52Server, CourierServer
from cyrus_server import Cyrus310Server, CyrusServer
from dovecot_server import DovecotServer
from login_script import stop_with_sessions_open

from popbsmtp.grants import GrantTable
from popbsmtp.parse.addresses import IgnoredNetworks
from popbsmtp.parse.matcher import Matcher
from popbsmtp.policy import Policy, apply
from popbsmtp.policy.sessions import SessionTracker
from popbsmtp.profiles import SERVER, select

pytestmark = pytest.mark.integration
GRACE, MAX_SESSION = 60.0, 86400.0
USERS = {"alice": "alice-pw"}
HELD = {"127.0.0.20", "::1"}


def _dovecot(version: str) -> Callable[[Path], Any]:
    return lambda work: DovecotServer(work, users=USERS, version=version)


SERVERS: Dict[str, Callable[[Path], Any]] = {
    "dovecot-2.3": _dovecot("2.3"),
    "dovecot-2.4": _dovecot("2.4"),
    "cyrus-3.6": lambda work: CyrusServer(work, USERS),
    "cyrus-3.10": lambda work: Cyrus310Server(work, USERS),
    "courier-5.0": lambda work: CourierServer(work, USERS),
    "courier-5.2": lambda work: Courier52Server(work, USERS),
}


def _log_of(server: Any) -> Path:
    return server.active_log if isinstance(server, DovecotServer) else server.rfc3339_log


def _log_text(server: Any) -> str:
    return _log_of(server).read_text(encoding="utf-8", errors="replace")


def _stopped_with_open_sessions(make: Callable[[Path], Any], work: Path) -> Path:
    server = make(work)
    with server:
        stop_with_sessions_open(server, lambda: _log_text(server))
    return _log_of(server)


def _replay(log: Path, server_events: bool) -> Tuple[SessionTracker, GrantTable, float]:
    """The daemon's decisions on each event, on a fake clock: the lines' own times."""
    matcher = Matcher(select(["auto"]))
    policy = Policy(GRACE, MAX_SESSION, IgnoredNetworks.none(), matcher.profiles)
    table, last = GrantTable(), 0.0
    with open(log, "rb") as handle:
        for found in matcher.match_block(handle.read(), time.time() + 60):
            last = max(last, found.time)
            if found.event == SERVER and not server_events:
                continue
            for decision in policy.decide(found, found.time, table):
                apply(decision, table)
    return policy.sessions, table, last


@pytest.mark.parametrize("name", list(SERVERS))
def test_stopping_the_server_ends_its_open_sessions(name: str) -> None:
    with tempfile.TemporaryDirectory(prefix="popbsmtp-restart-", dir="/tmp") as work:
        log = _stopped_with_open_sessions(SERVERS[name], Path(work))
        tracker, table, last = _replay(log, server_events=True)
        assert table.keys() == HELD  # both logins were seen and granted
        assert tracker.open_sessions() == 0
        assert all(grant.expires <= last + GRACE for grant in table)
        without, _, _ = _replay(log, server_events=False)
    # No server logs the end of a POP3 session it stops (Dovecot and Courier log the
    # IMAP one, Cyrus neither): its own start-up or shutdown line is what ends them.
    assert without.open_sessions() > 0
    assert tracker.stats.server_ended > 0
