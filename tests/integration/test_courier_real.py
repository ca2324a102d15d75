"""Real Courier-IMAP 5.0 and 5.2 / Courier POP3 output through ``popbsmtp test --json``.

Courier, 5.0 (Debian 12's, unpacked by .ci/setup, never installed: they conflict
with Dovecot's) or 5.2 (Debian 13's, in the trixie-courier tree), logs through
``courierlogger`` to a private rsyslogd.  Some logins come after STARTTLS (5.2
writes ``stls=1`` or ``starttls=1`` after the port).
Clients log in from several 127.0.0.N and ::1; some fail (wrong password,
unknown user, names forging Courier's ``, ip=[…]`` field).  ``popbsmtp test``
must authorize exactly the addresses whose login the *client* saw succeed,
and recognise each ``LOGOUT`` (with the address) as the end of its session.
"""

from __future__ import annotations

from typing import Dict, List

import pytest
from courier_server import Courier52Server, CourierServer
from login_script import (
    Attempt,
    check_authorizes_exactly,
    scripted_run_fixture,
    standard_attempts,
)

pytestmark = pytest.mark.integration

USERS: Dict[str, str] = {
    "alice": "alice-pw",
    "bob@example.org": "bob-pw",
    "x, ip=[6.6.6.6], port=[1]": "forge-pw",
    'q"u,o"te <a> #012': "quote-pw",
}
ATTEMPTS = standard_attempts(USERS)
# The unpacked 5.0 has no working couriertls; 5.2 (installed in its tree) has.
TLS_ATTEMPTS = [
    *ATTEMPTS,
    ("pop3/tls", "127.0.0.10", "alice", "alice-pw"),
    ("imap/tls", "::1", "alice", "alice-pw"),
    ("imap/tls", "127.0.0.7", "alice", "wrong"),
]


def attempts(server_class: type) -> List[Attempt]:
    return TLS_ATTEMPTS if server_class is Courier52Server else ATTEMPTS


def settled(text: str, sessions: int, failures: int) -> bool:
    """Every session's ``LOGOUT`` and every failure is in the log."""
    return text.count("LOGOUT, user=") >= sessions and text.count("LOGIN FAILED") >= failures


courier_run = scripted_run_fixture(
    "courier_run", [CourierServer, Courier52Server], USERS, attempts, settled
)


@pytest.mark.parametrize("which", ["rfc3339", "traditional"])
def test_courier_logins_authorize_exactly_the_successful_clients(courier_run, tmp_path, which):
    log, _, logouts = check_authorizes_exactly(courier_run, which, tmp_path, "courier")
    assert {e["ip"] for e in logouts} == courier_run.succeeded
    assert "LOGIN FAILED" in log.read_text(encoding="utf-8", errors="replace")
