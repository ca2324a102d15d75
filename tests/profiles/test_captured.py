"""The captured real-server logs in tests/profiles/data, read as ``popbsmtp test`` does.

Whatever the capture scripts last wrote: every login line is recognised by the
server's own profile, every session's end is seen, nothing else matches, no
address ever comes from a user name (the hostile test users carry 6.6.6.6),
and no line that looks like a login is left unrecognised.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from popbsmtp.cli.logtest import run_test
from popbsmtp.parse.addresses import parse_networks
from popbsmtp.parse.envelope import EnvelopeParser
from popbsmtp.parse.matcher import Matcher
from popbsmtp.policy import Policy
from popbsmtp.profiles import LOGIN, LOGOUT, registry, select

DATA = Path(__file__).parent / "data"
FILES = sorted(DATA.glob("*-captured*.log")) + sorted(DATA.glob("*-own-log.log"))


def test_captures_exist() -> None:
    names = {f.name.split("-")[0] for f in FILES}
    assert {"dovecot", "cyrus", "courier"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_captured_log(path: Path) -> None:
    server = path.name.split("-")[0]
    out = io.StringIO()
    with open(path, "rb") as handle:
        # Dovecot's own log_path file is read as such (log_format = dovecot)
        fmt = "dovecot" if "own-log" in path.name else "auto"
        matcher = Matcher(select(["auto"]), EnvelopeParser(fmt))
        summary = run_test(
            handle,
            matcher,
            Policy(60.0, 86400.0, parse_networks("none"), matcher.profiles),
            now=time.time(),
            out=out,
            as_json=True,
        )
    assert summary["profiles_matched"] == [server]
    assert summary["unparseable"] == 0
    assert summary["unrecognised_login_lines"] == []
    assert summary["suspect"] == 0
    event = {rule.name: rule.event for rule in registry()[server].rules}
    counts = {LOGIN: 0, LOGOUT: 0}
    for rule_id, count in summary["matched"].items():
        kind = event[rule_id.split("/")[1]]
        counts[kind] = counts.get(kind, 0) + count
    assert counts[LOGIN] >= 3
    assert counts[LOGOUT] == counts[LOGIN]
    assert "6.6.6.6" not in out.getvalue()  # no event carries a forged address


SHUTDOWNS = sorted(DATA.glob("*-shutdown.log"))


def test_shutdown_captures_exist() -> None:
    names = {"-".join(f.name.split("-")[:2]) for f in SHUTDOWNS}
    assert {"dovecot-2.3", "dovecot-2.4", "cyrus-3.6", "cyrus-3.10"} <= names
    assert {"courier-5.0", "courier-5.2"} <= names


@pytest.mark.parametrize("path", SHUTDOWNS, ids=lambda p: p.name)
def test_a_server_stopped_with_clients_ends_their_sessions(path: Path) -> None:
    """Captured: an IMAP and a POP3 client logged in when the server was stopped.
    Replayed as the daemon does, no session is left open and no grant outlives the
    grace after the last line (test_server_restart.py does the same on live servers)."""
    from popbsmtp.grants import GrantTable
    from popbsmtp.policy import apply

    matcher = Matcher(select(["auto"]))
    policy = Policy(60.0, 86400.0, parse_networks("none"), matcher.profiles)
    table, last = GrantTable(), 0.0
    with open(path, "rb") as handle:
        for found in matcher.match_block(handle.read(), time.time()):
            last = max(last, found.time)
            for decision in policy.decide(found, found.time, table):
                apply(decision, table)
    tracker = policy.sessions
    assert table.keys() == {"127.0.0.20", "::1"}
    assert tracker.open_sessions() == 0
    assert tracker.stats.server_ended >= 1
    assert all(grant.expires <= last + 60.0 for grant in table)
