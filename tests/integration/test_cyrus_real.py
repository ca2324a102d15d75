"""Real Cyrus IMAP 3.6 and 3.10 output through ``popbsmtp test --json``.

Cyrus imapd and pop3d, 3.6 (Debian 12's, unpacked by .ci/setup, never installed:
they conflict with Dovecot's) or 3.10 (Debian 13's, in the trixie-cyrus tree), log
through a private rsyslogd.
Clients log in from several 127.0.0.N and ::1, some fail (wrong password,
unknown user, hostile names such as ``x [6.6.6.6] y``).  ``popbsmtp test``
must authorize exactly the addresses whose login the *client* saw succeed,
see every ``USAGE`` logout, and never take an address from a ``badlogin:``.
"""

from __future__ import annotations

from typing import Dict

import pytest
from cyrus_server import Cyrus310Server, CyrusServer
from login_script import check_authorizes_exactly, scripted_run_fixture, standard_attempts

pytestmark = pytest.mark.integration

USERS: Dict[str, str] = {
    "alice": "alice-pw",
    "bob": "bob-pw",
    "x [6.6.6.6] y": "space-pw",  # the bracket trick: the address comes before the name
    'q"u,o"te': "quote-pw",
}
ATTEMPTS = [
    *standard_attempts(USERS),
    ("pop3", "127.0.0.7", "login: [6.6.6.6] y plaintext User logged in", "x"),
]


def settled(text: str, sessions: int, failures: int) -> bool:
    """Every session's ``USAGE`` logout is in the log."""
    return text.count(" USAGE ") >= sessions


cyrus_run = scripted_run_fixture(
    "cyrus_run", [CyrusServer, Cyrus310Server], USERS, ATTEMPTS, settled
)


@pytest.mark.parametrize("which", ["rfc3339", "traditional"])
def test_cyrus_logins_authorize_exactly_the_successful_clients(cyrus_run, tmp_path, which):
    log, events, logouts = check_authorizes_exactly(cyrus_run, which, tmp_path, "cyrus")
    assert {e["session"] for e in logouts} <= {
        e["session"] for e in events if e["event"] == "login"
    }
    text = log.read_text(encoding="utf-8", errors="replace")
    assert "badlogin:" in text  # the failures were logged, and matched nothing
