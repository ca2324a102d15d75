"""The journal source without journald: entry parsing, the command, the trust option,
the source choice, the saved cursor.  A real journald is in
tests/integration/test_journal_real.py; here a stand-in journalctl script shows how
the follower handles an unusable cursor and a journalctl that ends."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict

import pytest
from support import wait_for

from popbsmtp import config
from popbsmtp.errors import ConfigError
from popbsmtp.grants.state import Snapshot, StateFile
from popbsmtp.profiles import select
from popbsmtp.sources import choice
from popbsmtp.sources.journal import (
    JournalCursor,
    JournalSource,
    journalctl_command,
    parse_entry,
    read_lines,
)
from popbsmtp.sources.trust import Sender, TrustCheck, parse_journal_trust

CURSOR = "s=4d77;i=3;b=98;m=154;t=661d;x=4b96"
LOGIN = (
    "imap-login: Login: user=<alice>, method=PLAIN, rip=192.0.2.7, lip=127.0.0.1, "
    "mpid=7, session=<abcd>"
)


def entry(**fields: Any) -> bytes:
    base: Dict[str, Any] = {
        "__CURSOR": CURSOR,
        "__REALTIME_TIMESTAMP": "1796435619221897",
        "MESSAGE": LOGIN,
        "SYSLOG_IDENTIFIER": "dovecot",
        "_TRANSPORT": "syslog",
        "_PID": "77",
        "_UID": "0",
        "_COMM": "log",
        "_EXE": "/usr/lib/dovecot/log",
        "_HOSTNAME": "mail",
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


# -- one entry -----------------------------------------------------------------


def test_an_entry_becomes_an_envelope_and_a_sender() -> None:
    parsed = parse_entry(entry(), 8192)
    assert parsed is not None and parsed.envelope is not None
    env = parsed.envelope
    assert (env.time, env.host, env.program, env.pid, env.message) == (
        1796435619.221897, "mail", "dovecot", None, LOGIN)  # fmt: skip
    assert parsed.sender == Sender(0, "log", "/usr/lib/dovecot/log", None)
    assert parsed.cursor == CURSOR


def test_the_pid_is_the_tags_and_the_senders_only_without_a_tag() -> None:
    tagged = parse_entry(entry(SYSLOG_PID="12"), 8192)
    assert tagged is not None and tagged.envelope is not None and tagged.envelope.pid == 12
    native = parse_entry(entry(_TRANSPORT="journal"), 8192)
    assert native is not None and native.envelope is not None and native.envelope.pid == 77


@pytest.mark.parametrize(
    "fields",
    [
        {"MESSAGE": [LOGIN, LOGIN]},  # sent twice: which one would count?
        {"SYSLOG_IDENTIFIER": ["dovecot", "dovecot"]},
        {"MESSAGE": LOGIN + "\nimap-login: Login: user=<x>"},  # no server writes one
        {"MESSAGE": None},
        {"SYSLOG_IDENTIFIER": None},
        {"__REALTIME_TIMESTAMP": "soon"},
    ],
)
def test_ambiguous_or_incomplete_entries_have_no_envelope(fields: Dict[str, Any]) -> None:
    parsed = parse_entry(entry(**fields), 8192)
    assert parsed is not None and parsed.envelope is None
    assert parsed.cursor == CURSOR  # still read past


def test_binary_fields_are_decoded_and_hostile_senders_are_unknown() -> None:
    parsed = parse_entry(entry(MESSAGE=list(b"caf\xc3\xa9 \xff"), _UID="0x0", _COMM=[1] * 3), 99)
    assert parsed is not None and parsed.envelope is not None
    assert parsed.envelope.message == "caf\u00e9 \ufffd"
    assert parsed.sender.uid is None
    assert parsed.sender.comm == "\x01\x01\x01"


def test_overlong_messages_bad_cursors_and_non_objects() -> None:
    parsed = parse_entry(entry(MESSAGE="x" * 101), 100)
    assert parsed is not None and parsed.overlong and parsed.envelope is None
    bad = parse_entry(entry(__CURSOR="s=1; rm -rf /"), 8192)
    assert bad is not None and bad.cursor is None
    assert parse_entry(b"[1, 2]", 8192) is None
    assert parse_entry(b"{not json", 8192) is None
    assert parse_entry(b"[" * 100_000, 8192) is None


def test_read_lines_bounds_every_line() -> None:
    data = b"short\n" + b"x" * 50 + b"\nnext\ncut off"
    assert list(read_lines(io.BytesIO(data), 20)) == [b"short", b"", b"next"]


def test_the_journalctl_command() -> None:
    argv = journalctl_command("/j", cursor=CURSOR, since=5.0)
    assert "--directory=/j" in argv and f"--after-cursor={CURSOR}" in argv
    assert "--follow" in argv and "--no-tail" in argv
    assert not any(a.startswith("--since") for a in argv)  # the cursor wins
    once = journalctl_command(since=1234.9, follow=False, last=10)
    assert "--since=@1234" in once and "--lines=10" in once and "--follow" not in once
    assert not any(a.startswith("--directory") for a in once)


# -- the cursor in the saved state ---------------------------------------------


def test_the_cursor_is_saved_and_loaded_with_the_grants(tmp_path: Path) -> None:
    state = StateFile(str(tmp_path))
    state.save(Snapshot([("192.0.2.7", 2e9, "dovecot", "login")], JournalCursor(CURSOR, "/j")))
    loaded = state.load()
    assert loaded.position == JournalCursor(CURSOR, "/j")
    assert list(loaded.grants) == [("192.0.2.7", 2e9, "dovecot", "login")]


def test_a_damaged_cursor_sets_the_state_aside(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(
        json.dumps({"version": 1, "grants": [], "position": {"journal_cursor": "a b"}})
    )
    assert StateFile(str(tmp_path)).load().position is None
    assert list(tmp_path.glob("state.json.corrupt-*"))


# -- journal_trust ---------------------------------------------------------------


def test_journal_trust_replaces_defaults_key_by_key() -> None:
    trust = parse_journal_trust(" dovecot:uid=0|dovecot , unit=* ; courier:comm=x ")
    dovecot = trust["dovecot"]
    assert dovecot.users == ("0", "dovecot") and dovecot.units == ("*",)
    assert dovecot.comms == ("log", "dovecot")  # kept from the profile
    assert trust["courier"].comms == ("x",) and trust["courier"].users == ("root",)
    assert parse_journal_trust("") == {}


@pytest.mark.parametrize(
    "text, message",
    [
        ("nosuch:uid=0", "'nosuch' is not a profile"),
        ("dovecot", "write PROFILE:KEY=VALUE"),
        ("dovecot:user=0", "use uid=, comm="),
        ("dovecot:uid=0,uid=1", "uid= is given twice"),
        ("dovecot:uid=0;dovecot:uid=1", "given twice"),
        ("dovecot:comm=averyveryverylongname", "is not a valid comm"),
        ("dovecot:exe=log", "is not a valid exe"),
        ("dovecot:uid=", "is not a valid uid"),
        ("uw:comm=imapd", "uw has no journal default"),
    ],
)
def test_journal_trust_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_journal_trust(text)


def test_a_bad_journal_trust_names_file_line_and_key(tmp_path: Path) -> None:
    conf = tmp_path / "p.conf"
    conf.write_text("[popbsmtp]\nmap = lmdb:/tmp/x\njournal_trust = dovecot:uid=0,pid=1\n")
    with pytest.raises(ConfigError) as caught:
        config.load(str(conf))
    assert f"{conf}:3" in str(caught.value) and "journal_trust" in str(caught.value)


def test_a_profile_without_a_default_can_be_given_one() -> None:
    overrides = parse_journal_trust("uw:uid=0,comm=ipop3d")
    check = TrustCheck(select(["uw", "dovecot"]), overrides)
    assert check.refusal("uw", Sender(0, "ipop3d", None, None)) is None
    assert check.untrusted_profiles == []
    alone = TrustCheck(select(["uw"]), {})
    assert "no journal trust" in str(alone.refusal("uw", Sender(0, "ipop3d", None, None)))


def test_trust_needs_the_uid_the_program_and_the_unit_where_there_is_one() -> None:
    check = TrustCheck(select(["dovecot", "cyrus"]), {})
    ok = Sender(0, "log", None, None)
    assert check.refusal("dovecot", ok) is None
    assert check.refusal("dovecot", ok._replace(unit="dovecot.service")) is None
    assert check.refusal("dovecot", Sender(0, None, "/usr/libexec/dovecot/log", None)) is None
    assert "_UID=4242" in str(check.refusal("dovecot", ok._replace(uid=4242)))
    assert "_UID=None" in str(check.refusal("dovecot", ok._replace(uid=None)))
    assert "program" in str(check.refusal("dovecot", ok._replace(comm="logger")))
    assert "program" in str(check.refusal("dovecot", ok._replace(comm=None)))
    assert "unit" in str(check.refusal("dovecot", ok._replace(unit="session-3.scope")))
    assert "program" in str(check.refusal("cyrus", ok))  # root, but not imapd or pop3d
    assert check.refusal("cyrus", Sender(0, "imapd", None, None)) is None


def test_unknown_users_trust_nobody_and_are_reported_when_configured() -> None:
    check = TrustCheck(select(["dovecot"]), parse_journal_trust("dovecot:uid=no-such-user-x"))
    assert check.unknown_users == ["dovecot:no-such-user-x"]
    assert check.refusal("dovecot", Sender(0, "log", None, None)) is not None
    assert "uid=none" in check.describe("dovecot")


# -- which source --------------------------------------------------------------


def settings(**values: str) -> SimpleNamespace:
    base = {"source": "auto", "logfile": "auto", "journal_directory": "", "distro": "auto"}
    base.update(values)
    return SimpleNamespace(**base)


def test_explicit_choices(tmp_path: Path) -> None:
    log = str(tmp_path / "mail.log")
    assert choice.choose_source(settings(source="journal")).kind == choice.JOURNAL
    chosen = choice.choose_source(settings(source="file"), mail_log=log)
    assert (chosen.kind, chosen.path) == (choice.FILE, log)
    explicit = choice.choose_source(settings(logfile=log))
    assert (explicit.kind, explicit.path) == (choice.FILE, log)
    directory = choice.choose_source(settings(journal_directory="/j"))
    named = settings(source="file", distro="rhel")
    assert choice.choose_source(named).path == "/var/log/maillog"  # the named distro's
    assert (directory.kind, directory.path) == (choice.JOURNAL, "/j")


def test_auto_takes_the_mail_log_only_while_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(choice, "journal_available", lambda: True)
    log = tmp_path / "mail.log"
    auto = settings()
    now = time.time()

    def choose() -> choice.SourceChoice:
        return choice.choose_source(auto, now, mail_log=str(log))

    missing = choose()
    assert missing.kind == choice.JOURNAL and "does not exist" in missing.reason
    log.write_text("")
    assert "is empty" in choose().reason
    log.write_text("Dec  5 01:00:00 mail postfix/smtpd[1]: connect\n")
    chosen = choose()
    assert (chosen.kind, chosen.reason) == (choice.FILE, f"{log} is being written")
    os.utime(log, (now - 2 * choice.RECENT, now - 2 * choice.RECENT))
    stale = choose()
    assert stale.kind == choice.JOURNAL and "last written 48h ago" in stale.reason
    monkeypatch.setattr(choice, "journal_available", lambda: False)
    assert choose().kind == choice.FILE  # nothing better: wait for it


# -- the follower, with a stand-in journalctl ------------------------------------

FAKE = """#!/bin/sh
echo "$@" >> "{calls}"
case "$*" in
    *--after-cursor=bad*) echo "Failed to seek to cursor: Invalid argument" >&2; exit 1;;
esac
printf '%s\\n' '{line}'
exit 0
"""


def test_an_unusable_cursor_falls_back_to_the_window_and_an_ended_journalctl_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "journalctl"
    fake.parent.mkdir()
    fake.write_text(FAKE.format(calls=calls, line=entry().decode()))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    wake = threading.Event()
    clock = [0.0]
    source = JournalSource("/j", JournalCursor("bad", "/j"), since=1000.0, wake=wake.set,
                           clock=lambda: clock[0])  # fmt: skip
    got = []

    def read() -> bool:
        got.extend(source.read_entries())
        return bool(got)

    source.read_entries()  # starts journalctl with the saved cursor: refused
    wait_for(lambda: "cursor" in calls.read_text() if calls.exists() else False, 5.0)
    wait_for(lambda: source.read_entries() == [] and source._proc is None, 5.0)
    assert source.position is None  # dropped: the grace window instead
    clock[0] += 10
    wait_for(read, 5.0)
    assert got[0].cursor == CURSOR and source.position == JournalCursor(CURSOR, "/j")
    first, second = calls.read_text().splitlines()
    assert "--after-cursor=bad" in first and "--directory=/j" in first
    assert "--since=@1000" in second
    wait_for(lambda: source.read_entries() == [] and source._proc is None, 5.0)  # it ended
    assert source.stats.errors == 1 and "journalctl ended" in source.stats.last_error
    clock[0] += 10
    wait_for(lambda: source.read_entries() or len(calls.read_text().splitlines()) == 3, 5.0)
    assert f"--after-cursor={CURSOR}" in calls.read_text().splitlines()[2]
    source.close()


def test_a_forged_start_up_line_teaches_the_matcher_nothing() -> None:
    """An untrusted 'starting up' line naming 2.3 must not make 2.4's genuine logins
    look like the other version's form (the matcher learns versions from such lines)."""
    from popbsmtp.daemon.service import build_matcher
    from popbsmtp.sources.journal import match_entries

    matcher = build_matcher(SimpleNamespace(profiles=["dovecot"], log_format="auto",
                                            max_line_length=8192))  # type: ignore[arg-type]  # fmt: skip
    forged = parse_entry(entry(MESSAGE="master: Dovecot v2.3.19.1 (9b53102964) starting up for "
                               "pop3, imap (core dumps disabled)", _UID="4242",
                               _COMM="logger", _EXE="/usr/bin/logger"), 8192)  # fmt: skip
    genuine = parse_entry(entry(MESSAGE=LOGIN.replace("Login:", "Logged in:")), 8192)
    assert forged is not None and genuine is not None
    found = list(match_entries([forged, genuine], matcher, TrustCheck(matcher.profiles, {})))
    (_, _, start, why_start), (_, _, login, why_login) = found
    assert start is not None and why_start is not None and "_UID=4242" in why_start
    assert login is not None and login.ip == "192.0.2.7" and why_login is None
    assert matcher.stats.suspect == 0
