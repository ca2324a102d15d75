"""Every envelope format, auto-detection, and unparseable lines being counted."""

from __future__ import annotations

import time

import pytest

from popbsmtp.parse.envelope import FORMATS, EnvelopeParser
from popbsmtp.parse.matcher import Matcher
from popbsmtp.profiles import select

NOW = time.mktime((2026, 11, 27, 12, 0, 0, 0, 0, -1))
LOCAL = time.mktime((2026, 11, 27, 4, 48, 8, 0, 0, -1))
UTC = 1795754888.0  # 2026-11-27T04:48:08Z
LOGIN = (
    "imap-login: Login: user=<a>, method=PLAIN, rip=192.0.2.1, lip=192.0.2.2, mpid=1, "
    "session=<abcd>"
)

CASES = [
    # (format, line, time, host, program, pid, message)
    ("rfc3164", "Nov 27 04:48:08 mail dovecot: " + LOGIN, LOCAL, "mail", "dovecot", None, LOGIN),
    ("rfc3164", "Nov 27 04:48:08 mail cyrus/imap[42]: login: x", LOCAL, "mail", "cyrus/imap",
     42, "login: x"),
    ("rfc3339", "2026-11-27T04:48:08.123456+00:00 mail dovecot: " + LOGIN, UTC + 0.123456,
     "mail", "dovecot", None, LOGIN),
    ("rfc3339", "2026-11-27T06:48:08+0200 mx1.example.org popa3d[9]: Session from 192.0.2.1",
     UTC, "mx1.example.org", "popa3d", 9, "Session from 192.0.2.1"),
    ("rfc5424", "<22>1 2026-11-27T04:48:08.123456Z mail dovecot - - - " + LOGIN, UTC + 0.123456,
     "mail", "dovecot", None, LOGIN),
    ("rfc5424", '<22>1 2026-11-27T04:48:08Z mail imapd 77 ID4 [a@1 k="v\\"]"][b@2] \ufeffLOGIN',
     UTC, "mail", "imapd", 77, "LOGIN"),
    ("rfc5424", "1 2026-11-27T04:48:08Z mail dovecot - - - " + LOGIN, UTC, "mail", "dovecot",
     None, LOGIN),
    ("dovecot", "Nov 27 04:48:08 imap-login: Info: Login: x", LOCAL, "", "dovecot", None,
     "imap-login: Info: Login: x"),
    ("dovecot", "Nov 27 04:48:08 imap(a b)<1><s>: Info: Disconnected: Logged out", LOCAL, "",
     "dovecot", None, "imap(a b)<1><s>: Info: Disconnected: Logged out"),
    ("dovecot", "2026-11-27 04:48:08 pop3-login: Info: Login: x", LOCAL, "", "dovecot", None,
     "pop3-login: Info: Login: x"),
    ("dovecot", "dovecot: Nov 27 04:48:08 Info: imap-login: Login: x", LOCAL, "", "dovecot",
     None, "imap-login: Info: Login: x"),
    ("qpopper", "Fri Nov 27 04:48:08 2026 [311] Stats: a 0 0 0 0 h 192.0.2.1", LOCAL, "",
     "popper", 311, "Stats: a 0 0 0 0 h 192.0.2.1"),
    ("apple", "Nov 27 2026 04:48:08 IMAP User x", LOCAL, "", "AppleMailServer", None,
     "IMAP User x"),
]  # fmt: skip


OWN_LOGS = ("dovecot", "qpopper", "apple")  # a server's own file: named, never auto


@pytest.mark.parametrize(("fmt", "line", "stamp", "host", "prog", "pid", "msg"), CASES)
def test_format_and_auto(fmt, line, stamp, host, prog, pid, msg) -> None:
    parsers = [EnvelopeParser(fmt)]
    if fmt in OWN_LOGS:
        # Inside a syslog file such a line is whatever a local user logged.
        assert EnvelopeParser("auto").parse(line, NOW) is None
    else:
        parsers.append(EnvelopeParser("auto"))
    for parser in parsers:
        envelope = parser.parse(line, NOW)
        assert envelope is not None, (parser.log_format, line)
        assert envelope.time == pytest.approx(stamp, abs=1e-6)
        assert (envelope.host, envelope.program, envelope.pid, envelope.message) == (
            host,
            prog,
            pid,
            msg,
        )


@pytest.mark.parametrize(("fmt", "line"), [(c[0], c[1]) for c in CASES])
def test_other_formats_refuse_the_line(fmt, line) -> None:
    for other in FORMATS:
        if other in ("auto", fmt):
            continue
        assert EnvelopeParser(other).parse(line, NOW) is None, (other, line)


@pytest.mark.parametrize(
    "line",
    [
        "",
        "garbage",
        "Nov 27 04:48:08",
        "Nov 27 04:48:08 mail",
        "Foo 27 04:48:08 mail dovecot: x",
        "Nov 32 04:48:08 mail dovecot: x",
        "Nov 27 25:48:08 mail dovecot: x",
        "2026-13-27T04:48:08Z mail dovecot: x",
        "<22>1 - mail dovecot - - - x",
        '<22>1 2026-11-27T04:48:08Z mail dovecot - - [a k="unterminated] x',
        "<22>1 2026-11-27T04:48:08Z mail dovecot - - [a]x",
        "Nov 27 04:48:08 imap-login: Login: no level, no host",
    ],
)
def test_unparseable(line: str) -> None:
    assert EnvelopeParser("auto").parse(line, NOW) is None


def test_dovecot_own_log_is_not_read_as_a_host_named_imap_login() -> None:
    envelope = EnvelopeParser("rfc3164").parse("Nov 27 04:48:08 imap-login: Info: Login: x", NOW)
    assert envelope is None


def test_unknown_format_is_an_error() -> None:
    with pytest.raises(ValueError):
        EnvelopeParser("rfc9999")


def test_unparseable_candidates_are_counted() -> None:
    matcher = Matcher(select(["dovecot"]), EnvelopeParser("rfc3339"))
    lines = [
        b"Nov 27 04:48:08 mail dovecot: " + LOGIN.encode(),  # wrong format for this parser
        b"2026-11-27T04:48:08Z mail dovecot: " + LOGIN.encode(),
        b"noise without any needle",
    ]
    found = [matcher.match(line, NOW) for line in lines]
    assert [f is not None for f in found] == [False, True, False]
    assert matcher.stats.candidates == 2
    assert matcher.stats.unparseable == 1


def test_bsd_year_rolls_back_at_new_year() -> None:
    new_year = time.mktime((2027, 1, 1, 0, 5, 0, 0, 0, -1))
    envelope = EnvelopeParser().parse("Dec 31 23:59:59 mail dovecot: x", new_year)
    assert envelope is not None
    assert time.localtime(envelope.time).tm_year == 2026


def test_auto_answers_do_not_depend_on_the_line_before() -> None:
    """``auto`` decides each line's format on its own: no line changes the next's answer."""
    from popbsmtp.profiles import registry

    lines = [case[1] for case in CASES] + ["garbage", "Nov 27 04:48:08 imap-login: Login: x"]
    lines += [example.line for p in registry().values() for example in p.examples][::3]
    fresh = {line: EnvelopeParser("auto").parse(line, NOW) for line in lines}
    assert sum(found is not None for found in fresh.values()) > len(lines) // 2
    parser = EnvelopeParser("auto")
    for before in lines:
        for line in lines:
            parser.parse(before, NOW)
            assert parser.parse(line, NOW) == fresh[line], (before, line)
