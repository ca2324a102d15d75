"""Real Courier-IMAP 5 / Courier POP3 output through ``popbsmtp test --json``.

Courier (unpacked from Debian's packages by .ci/setup, never installed: they
conflict with Dovecot's) logs through ``courierlogger`` to a private rsyslogd.
Clients log in from several 127.0.0.N and ::1; some fail (wrong password,
unknown user, names forging Courier's ``, ip=[…]`` field).  ``popbsmtp test``
must authorize exactly the addresses whose login the *client* saw succeed,
and recognise each ``LOGOUT`` (with the address) as the end of its session.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest
from courier_server import CourierServer
from dovecot_server import imap_login, pop3_login
from support import popbsmtp, write_config

pytestmark = pytest.mark.integration

USERS: Dict[str, str] = {
    "alice": "alice-pw",
    "bob@example.org": "bob-pw",
    "x, ip=[6.6.6.6], port=[1]": "forge-pw",
    'q"u,o"te <a> #012': "quote-pw",
}
ATTEMPTS: List[Tuple[str, str, str, str]] = [  # protocol, source, user, password
    ("imap", "127.0.0.5", "alice", "alice-pw"),
    ("pop3", "127.0.0.6", "bob@example.org", "bob-pw"),
    ("imap", "::1", "bob@example.org", "bob-pw"),
    ("pop3", "127.0.0.8", "x, ip=[6.6.6.6], port=[1]", "forge-pw"),
    ("imap", "127.0.0.8", 'q"u,o"te <a> #012', "quote-pw"),
    ("imap", "127.0.0.7", "alice", "wrong"),
    ("pop3", "127.0.0.7", "nosuchuser", "x"),
    ("imap", "127.0.0.7", "x, ip=[6.6.6.6], port=[1]", "wrong"),
]


@pytest.fixture(scope="module")
def courier_run() -> Iterator[Tuple[CourierServer, Set[str], int]]:
    work = Path(tempfile.mkdtemp(prefix="popbsmtp-courier-", dir="/tmp"))
    succeeded: Set[str] = set()
    sessions = failures = 0
    try:
        with CourierServer(work, USERS) as server:
            for protocol, source, user, password in ATTEMPTS:
                login = pop3_login if protocol == "pop3" else imap_login
                port = server.pop3_port if protocol == "pop3" else server.imap_port
                if login(port, user, password, (source, 0)):
                    succeeded.add(source)
                    sessions += 1
                else:
                    failures += 1
            server.wait_for_log(
                lambda text: (
                    text.count("LOGOUT, user=") >= sessions
                    and text.count("LOGIN FAILED") >= failures
                ),
                f"{sessions} logouts and {failures} failures",
            )
        yield server, succeeded, sessions
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_test(tmp: Path, log: Path) -> Tuple[List[dict], dict]:
    config = write_config(tmp, logfile=log, ignore_networks="none")
    result = popbsmtp("test", "-c", str(config), "--json", "--profile", "auto", str(log))
    records = [json.loads(line) for line in result.stdout.splitlines()]
    return records[:-1], records[-1]["summary"]


@pytest.mark.parametrize("which", ["rfc3339", "traditional"])
def test_courier_logins_authorize_exactly_the_successful_clients(courier_run, tmp_path, which):
    server, succeeded, sessions = courier_run
    assert {"127.0.0.5", "127.0.0.6", "::1"} <= succeeded  # the ordinary users got in
    assert "127.0.0.7" not in succeeded
    log = server.rfc3339_log if which == "rfc3339" else server.traditional_log
    events, summary = _run_test(tmp_path, log)
    granted = {e["ip"] for e in events if e["event"] == "login" and e["ignored"] is None}
    assert granted == succeeded
    assert "6.6.6.6" not in {e["raw_ip"] for e in events}
    assert summary["profiles_matched"] == ["courier"]
    assert summary["unrecognised_login_lines"] == []
    assert len([e for e in events if e["event"] == "login"]) == sessions
    logouts = [e for e in events if e["event"] == "logout"]
    assert len(logouts) == sessions
    assert {e["ip"] for e in logouts} == succeeded
    assert "LOGIN FAILED" in log.read_text(encoding="utf-8", errors="replace")
