"""The journal source against a real systemd-journald fed by a real Dovecot 2.3.

A private journald (tests/integration/journald.py) receives Dovecot's syslog
lines and forgeries: ``logger -t dovecot`` with a genuine-looking login line,
sent by an unprivileged uid, by that uid through a copy of logger named
``log`` (Dovecot's command name), and by root through logger.  Both
``popbsmtp test --journal DIR`` and the daemon (``run --foreground`` with
``source = journal``) must authorize every genuine login and no forged one.
The daemon is stopped, more logins and forgeries arrive, and it is started
again: it must read exactly the entries after its saved cursor, none twice
and none missed.  Needs root, Dovecot and systemd-journald: a missing one
fails with a message naming .ci/setup (never a skip).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest
from dovecot_server import HOSTILE_USERS, DovecotServer, imap_login, pop3_login
from journald import PrivateJournal
from support import Daemon, popbsmtp, wait_for, write_config

from popbsmtp.profiles import select
from popbsmtp.sources.journal import parse_entry
from popbsmtp.sources.trust import TrustCheck

pytestmark = pytest.mark.integration

FORGER = 4242  # no such user: any unprivileged uid
FIRST: List[Tuple[str, str, str]] = [  # (protocol, source address, user)
    ("pop3", "127.0.0.5", "alice"),
    ("imap", "127.0.0.6", "bob@example.org"),
    ("imap", "::1", "Carol.Mixed-Case"),
    *[("pop3" if i % 2 else "imap", "127.0.0.8", name) for i, name in enumerate(HOSTILE_USERS)],
]
SECOND = [("pop3", "127.0.0.21", "alice"), ("imap", "127.0.0.22", "bob@example.org")]


# How each version logs a successful login (the forgeries imitate it).
LOGIN_WORDS = {"2.3": "Login", "2.4": "Logged in"}


def _login_line(version: str, ip: str) -> str:
    return (
        f"imap-login: {LOGIN_WORDS[version]}: user=<x>, method=PLAIN, rip={ip}, lip=127.0.0.1, "
        "mpid=1, session=<abcd>"
    )


class JournalDovecot(DovecotServer):
    """DovecotServer (2.3, or 2.4 in the trixie tree) whose /dev/log is a journald's."""

    def __init__(self, work_dir: Path, journal: PrivateJournal, version: str) -> None:
        super().__init__(work_dir, syslog=True, version=version, dev_log=journal.dev_log)
        self.journal = journal

    def start(self) -> None:
        self._rsyslog.dir.mkdir(parents=True, exist_ok=True)  # inside() works in it; no rsyslogd
        super().start()

    def log_offset(self) -> int:
        return len(self.journal.messages())

    def read_log(self, since: int = 0) -> List[str]:
        return self.journal.messages()[since:]


def _logins(server: JournalDovecot, sessions: List[Tuple[str, str, str]]) -> Set[str]:
    for protocol, source, user in sessions:
        login = pop3_login if protocol == "pop3" else imap_login
        port = server.pop3_port if protocol == "pop3" else server.imap_port
        assert login(port, user, server.users[user], (source, 0)), f"{user} from {source}"
    return {source for _, source, _ in sessions}


def _forge(journal: PrivateJournal, ips: List[str], work: Path, version: str) -> None:
    """One forgery per address, by the three kinds of sender journald tells apart."""
    renamed = work / "forger" / "log"  # logger under Dovecot's command name
    renamed.parent.mkdir(exist_ok=True)
    renamed.parent.chmod(0o755)
    shutil.copy("/usr/bin/logger", renamed)
    for n, ip in enumerate(ips):
        if n % 3 == 0:
            journal.forge(FORGER, "dovecot", _login_line(version, ip))
        elif n % 3 == 1:
            argv = ["setpriv", f"--reuid={FORGER}", f"--regid={FORGER}", "--clear-groups",
                    str(renamed), "-t", "dovecot", _login_line(version, ip)]  # fmt: skip
            subprocess.run(journal.inside(argv), check=True, capture_output=True, timeout=30)
        else:
            argv = [
                "logger",
                "-t",
                "dovecot",
                _login_line(version, ip),
            ]  # root, but not Dovecot's program
            subprocess.run(journal.inside(argv), check=True, capture_output=True, timeout=30)


def _settled(server: JournalDovecot, logins: int, forged: int) -> None:
    """Every login, logout and forgery is in the journal."""
    said = f": {LOGIN_WORDS[server.version]}: user=<"

    def done() -> bool:
        text = server.read_log()
        return (
            sum(said in line for line in text) >= logins + forged
            and sum("Logged out" in line for line in text) >= logins
        )

    wait_for(done, 20.0, 0.1, "the logins, logouts and forgeries in the journal")


def _state(conf: Path) -> Dict[str, object]:
    return json.loads((conf.parent / "state" / "state.json").read_text())


def _refused(text: str) -> List[str]:
    return re.findall(r"refused journal entry for dovecot/[a-z_]+ \(([^)]*)\)", text)


def _granted(text: str) -> Set[str]:
    return set(re.findall(r"granted (\S+) until", text))


def _statistics(daemon: Daemon) -> Dict[str, object]:
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGUSR1)
    daemon.wait_log("statistics: ")
    return json.loads(daemon.log().split("statistics: ", 1)[1].splitlines()[0])


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[PrivateJournal]:
    tmp_path.chmod(0o755)
    journal = PrivateJournal(tmp_path / "journald")
    journal.start()
    try:
        yield journal
    finally:
        journal.stop()


@pytest.mark.parametrize("version", ["2.3", "2.4"])
def test_dovecot_entries_carry_the_fields_the_defaults_trust(
    tmp_path: Path, journal: PrivateJournal, version: str
) -> None:
    """Independent of the profile's rules: genuine login entries are trusted by the
    dovecot defaults (_UID=0, _COMM=log), each forgery is not."""
    with JournalDovecot(tmp_path, journal, version) as server:
        _logins(server, FIRST[:3])
        _forge(journal, ["6.6.6.1", "6.6.6.2", "6.6.6.3"], tmp_path, version)
        _settled(server, 3, 3)
        entries = journal.entries()
    trust = TrustCheck(select(["dovecot"]), {})
    said = f"-login: {LOGIN_WORDS[version]}: user=<"
    logins = [(e, parse_entry(json.dumps(e).encode(), 8192)) for e in entries
              if said in str(e.get("MESSAGE"))]  # fmt: skip
    verdicts = {str(e["MESSAGE"]).split("rip=")[1].split(",")[0]: trust.refusal(
        "dovecot", p.sender) for e, p in logins if p is not None}  # fmt: skip
    assert {ip for ip, why in verdicts.items() if why is None} == {"127.0.0.5", "127.0.0.6", "::1"}
    assert {ip for ip, why in verdicts.items() if why is not None} == {
        "6.6.6.1", "6.6.6.2", "6.6.6.3"}  # fmt: skip


@pytest.mark.parametrize("version", ["2.3", "2.4"])
def test_journal_grants_every_genuine_login_and_no_forgery(
    tmp_path: Path, journal: PrivateJournal, version: str
) -> None:
    forged1 = [f"6.6.6.{n}" for n in range(1, 7)]
    forged2 = [f"6.6.6.{n}" for n in range(11, 14)]
    with JournalDovecot(tmp_path, journal, version) as server:
        first = _logins(server, FIRST)
        _forge(journal, forged1, tmp_path, version)
        _settled(server, len(FIRST), len(forged1))
        genuine = [e for e in journal.entries() if str(e.get("MESSAGE", "")).startswith("imap-")]
        assert {(e.get("_UID"), e.get("_COMM")) for e in genuine if "6.6.6." not in str(
            e["MESSAGE"])} == {("0", "log")}  # fmt: skip
        # ::1 logs in too: with lmdb's partial lookups only "neighbours" lets it be entered
        conf = write_config(tmp_path, source="journal", journal_directory=journal.journal_dir,
                            ipv6_scope="neighbours")  # fmt: skip
        explained = popbsmtp("check-config", "--explain", "-c", str(conf)).stdout
        assert f"# source: the journal in {journal.journal_dir} (source = journal)" in explained
        assert "# journal trust dovecot: uid=0 comm=dovecot|log" in explained

        daemon = Daemon(conf).start()
        wait_for(lambda: _granted(daemon.log()) >= first, 20.0, 0.05, "the first grants")
        wait_for(lambda: len(_refused(daemon.log())) >= len(forged1), 10.0, 0.05, "refusals")
        assert _statistics(daemon)["untrusted"] == len(forged1)
        assert daemon.stop() == 0
        run1 = daemon.log()
        assert _granted(run1) == first
        assert sorted(_refused(run1)) == sorted(forged1)
        saved = _state(conf)
        assert {row[0] for row in saved["grants"]} == first  # type: ignore[union-attr]
        cursor = saved["position"]["journal_cursor"]  # type: ignore[index]

        # Stopped: more logins and forgeries; a restart reads exactly these.
        second = _logins(server, SECOND)
        _forge(journal, forged2, tmp_path, version)
        _settled(server, len(FIRST) + len(SECOND), len(forged1) + len(forged2))
        after = subprocess.run(
            ["journalctl", f"--directory={journal.journal_dir}", "--output=json",
             f"--after-cursor={cursor}"], capture_output=True, check=True,
        ).stdout.splitlines()  # fmt: skip
        daemon = Daemon(conf).start()
        wait_for(lambda: _granted(daemon.log()) >= second, 20.0, 0.05, "the second grants")
        wait_for(lambda: len(_refused(daemon.log())) >= len(forged2), 10.0, 0.05, "refusals")
        stats = _statistics(daemon)
        assert daemon.stop() == 0
        run2 = daemon.log()
        assert _granted(run2) == second
        assert sorted(_refused(run2)) == sorted(forged2), "a forged entry read twice or missed"
        assert stats["lines_read"] == len(after), "entries after the cursor read once each"
        last = json.loads(after[-1])["__CURSOR"]
        assert _state(conf)["position"]["journal_cursor"] == last  # type: ignore[index]
        assert {row[0] for row in _state(conf)["grants"]} == first | second  # type: ignore[union-attr]

        doctor = popbsmtp("doctor", "-c", str(conf), check=False).stdout
        [line] = [x for x in doctor.splitlines() if " log: " in x]
        logins = len(FIRST) + len(SECOND)
        assert f"{logins} logins recognised, {len(forged1 + forged2)} refused" in line
        assert f"the journal in {journal.journal_dir} (source = journal)" in line

        result = popbsmtp("test", "--journal", str(journal.journal_dir), "--json",
                          "-c", str(conf)).stdout  # fmt: skip
    records = [json.loads(line) for line in result.splitlines()]
    summary = records.pop()["summary"]
    logins = [r for r in records if r["event"] == "login"]
    assert {r["ip"] for r in logins if r["ignored"] is None} == first | second
    refused = {r["ip"] for r in logins if r["ignored"] and "untrusted sender" in r["ignored"]}
    assert refused == set(forged1 + forged2)
    assert summary["untrusted"] == len(forged1 + forged2)


def test_a_flood_of_forged_entries_is_counted_not_logged_line_by_line(
    tmp_path: Path, journal: PrivateJournal
) -> None:
    """Any local user can send entries: refusing them must not write a log line each."""
    forged = [f"6.6.7.{n}" for n in range(1, 41)]
    argv = ["setpriv", f"--reuid={FORGER}", f"--regid={FORGER}", "--clear-groups",
            "logger", "-t", "dovecot"]  # fmt: skip
    lines = "".join(_login_line("2.3", ip) + "\n" for ip in forged)
    subprocess.run(journal.inside(argv), input=lines, text=True, check=True, timeout=30)
    said = [e for e in journal.entries() if "6.6.7." in str(e.get("MESSAGE"))]
    assert len(said) == len(forged)
    conf = write_config(tmp_path, source="journal", journal_directory=journal.journal_dir)
    daemon = Daemon(conf).start()
    wait_for(lambda: "further refusals are counted" in daemon.log(), 20.0, 0.05, "the notice")

    def untrusted() -> int:
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: "statistics: " in daemon.log(), 5.0, 0.02, "statistics")
        last = daemon.log().rsplit("statistics: ", 1)[1].splitlines()[0]
        return int(json.loads(last)["untrusted"])

    wait_for(lambda: untrusted() == len(forged), 20.0, 0.1, "every forgery counted")
    assert daemon.stop() == 0
    assert len(_refused(daemon.log())) == 10, "only the first refusals are logged one by one"
    assert not _granted(daemon.log())
