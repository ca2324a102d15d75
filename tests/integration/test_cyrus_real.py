"""Real Cyrus IMAP 3.6 output through ``popbsmtp test --json``.

Cyrus imapd and pop3d (unpacked from Debian's packages by .ci/setup, never
installed: they conflict with Dovecot's) log through a private rsyslogd.
Clients log in from several 127.0.0.N and ::1, some fail (wrong password,
unknown user, hostile names such as ``x [6.6.6.6] y``).  ``popbsmtp test``
must authorize exactly the addresses whose login the *client* saw succeed,
see every ``USAGE`` logout, and never take an address from a ``badlogin:``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest
from cyrus_server import CyrusServer
from dovecot_server import imap_login, pop3_login
from support import popbsmtp, write_config

pytestmark = pytest.mark.integration

USERS: Dict[str, str] = {
    "alice": "alice-pw",
    "bob": "bob-pw",
    "x [6.6.6.6] y": "space-pw",  # the bracket trick: the address comes before the name
    'q"u,o"te': "quote-pw",
}
ATTEMPTS: List[Tuple[str, str, str, str]] = [  # protocol, source, user, password
    ("imap", "127.0.0.5", "alice", "alice-pw"),
    ("pop3", "127.0.0.6", "bob", "bob-pw"),
    ("imap", "::1", "bob", "bob-pw"),
    ("pop3", "127.0.0.8", "x [6.6.6.6] y", "space-pw"),
    ("imap", "127.0.0.8", 'q"u,o"te', "quote-pw"),
    ("imap", "127.0.0.7", "alice", "wrong"),
    ("pop3", "127.0.0.7", "nosuchuser", "x"),
    ("imap", "127.0.0.7", "x [6.6.6.6] y", "wrong"),
    ("pop3", "127.0.0.7", "login: [6.6.6.6] y plaintext User logged in", "x"),
]


@pytest.fixture(scope="module")
def cyrus_run() -> Iterator[Tuple[CyrusServer, Set[str], int]]:
    work = Path(tempfile.mkdtemp(prefix="popbsmtp-cyrus-", dir="/tmp"))
    succeeded: Set[str] = set()
    sessions = 0
    try:
        with CyrusServer(work, USERS) as server:
            for protocol, source, user, password in ATTEMPTS:
                login = pop3_login if protocol == "pop3" else imap_login
                port = server.pop3_port if protocol == "pop3" else server.imap_port
                if login(port, user, password, (source, 0)):
                    succeeded.add(source)
                    sessions += 1
            server.wait_for_log(
                lambda text: text.count(" USAGE ") >= sessions, f"{sessions} USAGE lines"
            )
        yield server, succeeded, sessions
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def _run_test(tmp: Path, log: Path) -> Tuple[List[dict], dict]:
    config = write_config(tmp, logfile=log, ignore_networks="none")
    result = popbsmtp("test", "-c", str(config), "--json", "--profile", "auto", str(log))
    records = [json.loads(line) for line in result.stdout.splitlines()]
    return records[:-1], records[-1]["summary"]


@pytest.mark.parametrize("which", ["rfc3339", "traditional"])
def test_cyrus_logins_authorize_exactly_the_successful_clients(cyrus_run, tmp_path, which):
    server, succeeded, sessions = cyrus_run
    assert {"127.0.0.5", "127.0.0.6", "::1"} <= succeeded  # the ordinary users got in
    assert "127.0.0.7" not in succeeded
    log = server.rfc3339_log if which == "rfc3339" else server.traditional_log
    events, summary = _run_test(tmp_path, log)
    granted = {e["ip"] for e in events if e["event"] == "login" and e["ignored"] is None}
    assert granted == succeeded
    assert "6.6.6.6" not in {e["raw_ip"] for e in events}
    assert summary["profiles_matched"] == ["cyrus"]
    assert summary["unrecognised_login_lines"] == []
    assert len([e for e in events if e["event"] == "login"]) == sessions
    logouts = [e for e in events if e["event"] == "logout"]
    assert len(logouts) == sessions
    assert {e["session"] for e in logouts} <= {
        e["session"] for e in events if e["event"] == "login"
    }
    text = log.read_text(encoding="utf-8", errors="replace")
    assert "badlogin:" in text  # the failures were logged, and matched nothing
