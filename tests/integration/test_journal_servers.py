"""Cyrus and Courier through a real journald: the journal trust defaults are right.

The same scripted logins as test_cyrus_real.py and test_courier_real.py, but
the servers' syslog(3) lines go to a private systemd-journald
(tests/integration/journald.py), and forgeries of each server's login line
are sent by an unprivileged uid with ``logger``.  ``popbsmtp test --journal``
must authorize exactly the clients that got in and refuse every forgery.
Cyrus logs from imapd/pop3d as ``cyrus_user`` (``nobody`` in the harness,
``cyrus`` in the packages), so the defaults refuse the harness's lines until
``journal_trust`` names that user: that is checked too.  Courier's lines come
from courierlogger as root.  Needs root and the unpacked servers (.ci/setup).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
import test_courier_real
import test_cyrus_real
from courier_server import CourierServer
from cyrus_server import CyrusServer
from journald import PrivateJournal, journalled
from login_script import ScriptedRun, scripted_run
from support import popbsmtp, write_config

pytestmark = pytest.mark.integration

FORGER = 4242
FORGED_IP = "6.6.6.6"


def _forge(journal: PrivateJournal, tag: str, message: str, pid: bool) -> None:
    argv = ["setpriv", f"--reuid={FORGER}", f"--regid={FORGER}", "--clear-groups", "logger",
            *(["--id=4242"] if pid else []), "-t", tag, message]  # fmt: skip
    subprocess.run(journal.inside(argv), check=True, capture_output=True, timeout=30)


def _test_journal(tmp: Path, journal: PrivateJournal, **options: str) -> Tuple[List[dict], dict]:
    # ::1 logs in too: with lmdb's partial lookups only "neighbours" lets it be entered
    conf = write_config(tmp, ignore_networks="none", ipv6_scope="neighbours", **options)
    result = popbsmtp("test", "-c", str(conf), "--json", "--journal", str(journal.journal_dir))
    records = [json.loads(line) for line in result.stdout.splitlines()]
    return records[:-1], records[-1]["summary"]


def _granted(events: List[dict]) -> set:
    return {e["ip"] for e in events if e["event"] == "login" and e["ignored"] is None}


@pytest.fixture(scope="module")
def cyrus_journal() -> Iterator[ScriptedRun]:
    mod = test_cyrus_real
    with scripted_run(journalled(CyrusServer), mod.USERS, mod.ATTEMPTS, mod.settled) as run:
        yield run


@pytest.fixture(scope="module")
def courier_journal() -> Iterator[ScriptedRun]:
    mod = test_courier_real
    with scripted_run(journalled(CourierServer), mod.USERS, mod.ATTEMPTS, mod.settled) as run:
        yield run


def test_cyrus_through_the_journal(cyrus_journal: ScriptedRun, tmp_path: Path) -> None:
    journal = cyrus_journal.server.syslog
    assert isinstance(journal, PrivateJournal)
    journal.start()  # the server stopped with its journald; the journal files remain
    try:
        line = f"login: [{FORGED_IP}] eve plaintext User logged in SESSIONID=<mail-1-2-3>"
        _forge(journal, "cyrus/imap", line, pid=True)
        events, summary = _test_journal(tmp_path, journal, journal_trust="cyrus:uid=nobody")
        assert _granted(events) == cyrus_journal.succeeded
        assert summary["untrusted"] == 1
        assert [e["raw_ip"] for e in events if e["ignored"] and "untrusted" in e["ignored"]] == [
            FORGED_IP
        ]
        # The defaults trust root and cyrus: the harness's cyrus_user (nobody) is neither.
        events, summary = _test_journal(tmp_path, journal)
        assert _granted(events) == set()
        refused = [e for e in events if e["ignored"] and "untrusted" in e["ignored"]]
        assert summary["untrusted"] == len(refused)
        logins = [e for e in refused if e["event"] == "login"]
        assert len(logins) == cyrus_journal.sessions + 1  # each genuine login, and the forgery
        assert len([e for e in refused if e["event"] == "logout"]) == cyrus_journal.sessions
        assert all("_UID=65534" in e["ignored"] or "_UID=4242" in e["ignored"] for e in refused)
    finally:
        journal.stop()


def test_courier_through_the_journal(courier_journal: ScriptedRun, tmp_path: Path) -> None:
    journal = courier_journal.server.syslog
    assert isinstance(journal, PrivateJournal)
    journal.start()
    try:
        _forge(journal, "imapd", f"LOGIN, user=eve, ip=[{FORGED_IP}], port=[1], protocol=IMAP",
               pid=False)  # fmt: skip
        events, summary = _test_journal(tmp_path, journal)
        assert _granted(events) == courier_journal.succeeded
        assert summary["untrusted"] == 1
        assert summary["profiles_matched"] == ["courier"]
    finally:
        journal.stop()
