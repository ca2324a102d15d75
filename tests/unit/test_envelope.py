import datetime as dt
import time

import pytest

from popbsmtp.parse.envelope import EnvelopeParser


def local(*args):
    return time.mktime(dt.datetime(*args).timetuple())


def test_traditional_line_is_split_and_year_inferred():
    now = local(2026, 11, 27, 5, 0, 0)
    env = EnvelopeParser().parse("Nov 27 04:48:08 mail ipop3d[123]: Login user=a", now)
    assert env is not None
    assert (env.host, env.program, env.pid, env.message) == ("mail", "ipop3d", 123, "Login user=a")
    assert env.time == local(2026, 11, 27, 4, 48, 8)


def test_single_digit_day_is_space_padded():
    now = local(2026, 3, 5, 12, 0, 0)
    env = EnvelopeParser().parse("Mar  5 11:00:00 h dovecot: msg", now)
    assert env is not None and env.time == local(2026, 3, 5, 11, 0, 0)
    assert env.pid is None


def test_new_year_rollover_puts_december_in_previous_year():
    now = local(2027, 1, 1, 0, 0, 5)
    env = EnvelopeParser().parse("Dec 31 23:59:59 h p: m", now)
    assert env is not None and env.time == local(2026, 12, 31, 23, 59, 59)


def test_rfc3339_high_precision_with_offset():
    env = EnvelopeParser().parse(
        "2026-11-27T04:48:08.123456+01:00 mail dovecot: imap-login: x", 0.0
    )
    assert env is not None
    expected = dt.datetime(2026, 11, 27, 3, 48, 8, 123456, dt.timezone.utc).timestamp()
    assert env.time == pytest.approx(expected)
    assert env.program == "dovecot" and env.message == "imap-login: x"


@pytest.mark.parametrize(
    "line",
    [
        "",
        "garbage",
        "Foo 27 04:48:08 h p: m",
        "Nov 27 04:48 h p: m",
        "2026-13-45T04:48:08+00:00 h p: m",
        "Nov 27 04:48:08 h",
        "Nov ２7 04:48:08 h p: m",  # full-width digit
    ],
)
def test_lines_without_envelope_are_rejected(line):
    assert EnvelopeParser().parse(line, time.time()) is None


def test_explicit_format_only_accepts_its_own():
    line = "2026-11-27T04:48:08+00:00 h p: m"
    assert EnvelopeParser("rfc3164").parse(line, time.time()) is None
    assert EnvelopeParser("rfc3339").parse(line, time.time()) is not None
