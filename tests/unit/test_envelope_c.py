"""The C envelope split (popbsmtp/_envelope.c) answers exactly like the regexes.

The regex splitters in :mod:`popbsmtp.parse.envelope` are the reference: for every
line the C split must give the same envelope (same time to the bit, host,
program, pid and message) or the same None.  Where it cannot be sure it
defers (NotImplemented) and the regexes decide; the daemon's splitters are
checked whole too.  Lines are built from an envelope's parts with each part
often a near miss (lengths at the limits, a missing colon, a bad date), then
mutated character by character.

The extension is built by ``.ci/setup``; its absence is a failure here, not a
skip: without it the daemon silently runs the slower regexes.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from popbsmtp.parse import envelope as syslog
from popbsmtp.parse.envelope import REGEX_SPLITTERS, Envelope

try:
    from popbsmtp import _envelope
except ImportError as exc:  # pragma: no cover - reported as a failure below
    _envelope = None  # type: ignore[assignment]
    MISSING = f"popbsmtp._envelope is not built ({exc}): run .ci/setup (gcc, python3-dev)"

NOW = 1_795_759_093.0  # 2026-11-27, the stamps' year

digits = st.text("0123456789", min_size=0, max_size=11)
two = st.one_of(st.text("0123456789", min_size=2, max_size=2), digits)
hours = st.integers(0, 23).map("{:02d}".format)
sixty = st.integers(0, 59).map("{:02d}".format)


def part(valid, edge):
    """Mostly a valid part, one time in eight a near miss: whole lines are often valid."""
    return st.integers(0, 7).flatmap(lambda n: edge if n == 7 else valid)


def fraction(longest: int):
    valid = st.text("0123456789", min_size=1, max_size=longest).map(lambda d: "." + d)
    return part(st.one_of(st.just(""), valid), digits.map(lambda d: "." + d))


@st.composite
def iso_stamp(draw) -> str:
    date = draw(
        part(
            st.datetimes().map(lambda d: f"{d.year:04d}-" + d.strftime("%m-%dT%H:%M:%S")),
            st.one_of(
                st.tuples(digits, two, two, two, two, two).map(
                    lambda p: f"{p[0]}-{p[1]}-{p[2]}T{p[3]}:{p[4]}:{p[5]}"
                ),
                # the ends of months, leap years or not
                st.tuples(st.integers(0, 9999), st.integers(1, 12), st.integers(28, 31)).map(
                    lambda p: f"{p[0]:04d}-{p[1]:02d}-{p[2]:02d}T12:00:00"
                ),
            ),
        )
    )
    if draw(st.booleans()):
        date = date.replace("T", " ", 1)
    frac = draw(fraction(9))
    zone = draw(
        part(
            st.one_of(
                st.just("Z"),
                st.tuples(st.sampled_from("+-"), hours, st.sampled_from(["", ":"]), sixty).map(
                    "".join
                ),
            ),
            st.one_of(
                st.sampled_from(["+24:00", "-23:60", "+00:99", "", "z", "+1:00"]),
                st.tuples(st.sampled_from("+-Z"), two, st.sampled_from(["", ":"]), two).map(
                    "".join
                ),
            ),
        )
    )
    return date + frac + zone


@st.composite
def bsd_stamp(draw) -> str:
    mon = draw(part(st.sampled_from(["Jan", "Feb", "Nov", "Dec"]), st.text("Nnov1 ", max_size=4)))
    day = draw(
        part(
            st.integers(1, 31).map(lambda d: f"{d:2d}" if d < 10 and d % 2 else f"{d:02d}"),
            st.one_of(st.sampled_from(["32", "00", " 0", "5 "]), two),
        )
    )
    hms = draw(
        part(
            st.tuples(hours, sixty, sixty).map(":".join),
            st.tuples(two, two, two).map(":".join),
        )
    )
    frac = draw(fraction(6))
    return f"{mon} {day} {hms}{frac}"


@st.composite
def rest(draw) -> str:
    host = draw(
        part(
            st.one_of(
                st.text("mail.example-1[]:", min_size=1, max_size=12), st.just("x" * 255)
            ).map(lambda host: host + "x" if host.endswith(":") else host),
            st.sampled_from(["mail:", "", "x" * 256, "h" * 254 + ":", "a b"]),
        )
    )
    program = draw(
        part(
            st.one_of(st.text("dovecot/ipop3d_.-9", min_size=1, max_size=10), st.just("a" * 64)),
            st.one_of(st.sampled_from(["a" * 65, "", "a b", "p:"]), st.text("ab[]: ", max_size=5)),
        )
    )
    pid = draw(
        part(
            st.one_of(st.just(""), st.integers(0, 9_999_999_999).map("[{}]".format)),
            st.one_of(
                st.sampled_from(["[12345678901]", "[x]", "[1", "[]", "[0000000000]"]),
                digits.map("[{}]".format),
            ),
        )
    )
    colon = draw(part(st.just(": "), st.sampled_from([":", " ", ": : ", ":  ", "", ":\x00"])))
    space = draw(part(st.just(" "), st.sampled_from(["", "  ", ":", "T"])))
    message = draw(st.text("imap-login: Login user=<a> rip=1.2.3.4[]: \x00", max_size=30))
    return f"{space}{host} {program}{pid}{colon}{message}"


MUTATION_CHARS = "0123456789 :.-+TZ[]a\x00"


@st.composite
def mutated(draw, base) -> str:
    line = draw(base)
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 3]))):
        if not line:
            break
        at = draw(st.integers(0, len(line) - 1))
        op = draw(st.sampled_from(["delete", "replace", "insert"]))
        char = draw(st.sampled_from(MUTATION_CHARS))
        if op == "delete":
            line = line[:at] + line[at + 1 :]
        elif op == "replace":
            line = line[:at] + char + line[at + 1 :]
        else:
            line = line[:at] + char + line[at:]
    return line


ISO_LINES = mutated(st.tuples(iso_stamp(), rest()).map("".join))
BSD_LINES = mutated(st.tuples(bsd_stamp(), rest()).map("".join))


def c_split(kind: str, line: str):
    """The C answer as an Envelope (or None / NotImplemented)."""
    assert _envelope is not None, MISSING
    if kind == "rfc3339":
        return _envelope.rfc3339(line, Envelope)
    found = _envelope.rfc3164(line)
    if found is None or found is NotImplemented:
        return found
    mon, day, hms, host, program, pid, message = found
    stamp = syslog._bsd_time(mon, day, hms, NOW)
    return None if stamp is None else Envelope(stamp, host, program, pid, message)


def same(kind: str, line: str) -> None:
    expected = REGEX_SPLITTERS[kind](line, NOW)
    found = c_split(kind, line)
    if found is NotImplemented:
        assert not line.isascii() or _huge(expected), line
    else:
        assert found == expected, line
        if found is not None:
            assert type(found) is Envelope
            assert math.copysign(1, found.time) == math.copysign(1, expected.time)
    assert syslog._SPLITTERS[kind](line, NOW) == expected  # the daemon's splitter, whole


def _huge(envelope) -> bool:
    """The only ASCII line C defers: a fraction on a stamp past 2^53 microseconds."""
    return envelope is not None and abs(envelope.time) * 1e6 > 2**53


@settings(max_examples=1500, deadline=None)
@given(ISO_LINES)
@example("2026-11-27T05:58:13.516682+00:00 mail dovecot: imap-login: Login: user=<a>")
@example("9999-12-31T23:59:59.999999-23:59 h p: m")  # defers: past 2^53 microseconds
@example("0001-01-01T00:00:00.5+01:00 h p[1]: m")  # defers: before -2^53 microseconds
@example("2024-02-29 00:00:00Z h p: m")
@example("2023-02-29T00:00:00Z h p: m")
@example("2026-11-27T05:58:13.1234567890Z h p: m")
@example("2026-11-27T05:58:13+05:30 h p: m")
@example("2026-11-27T05:58:13-0530 h p: m")
@example("2026-11-27T05:58:13+23:60 h p: m")  # one day: fromisoformat refuses
@example("2100-02-29T00:00:00Z h p: m")
@example("2000-02-29T00:00:00Z h p: m")
@example("2026-11-27T05:58:60Z h p: m")
@example("2026-11-27T05:58:13Z " + "h" * 255 + " p: m")
@example("2026-11-27T05:58:13Z " + "h" * 256 + " p: m")
@example("2026-11-27T05:58:13Z h " + "p" * 64 + "[1234567890]: m")
@example("2026-11-27T05:58:13Z h " + "p" * 65 + ": m")
@example("2026-11-27T05:58:13Z h p[12345678901]: m")
@example("2255-06-05T23:47:34.740991Z h p: m")  # just under 2^53 microseconds
@example("2255-06-05T23:47:34.740993Z h p: m")  # just over: defers
def test_rfc3339_split_equals_the_regex(line):
    same("rfc3339", line)


def test_month_ends_and_leap_years_are_judged_as_datetime_does():
    for year in (1, 4, 100, 400, 1900, 1970, 2000, 2024, 2026, 2100, 9999):
        for month in range(1, 13):
            for day in range(27, 33):
                same("rfc3339", f"{year:04d}-{month:02d}-{day:02d}T23:59:59.9+01:00 h p: m")


@settings(max_examples=1500, deadline=None)
@given(BSD_LINES)
@example("Nov 27 05:58:13 mail dovecot: imap-login: Login: user=<a>")
@example("Nov  5 05:58:13.123456 mail ipop3d[1234567890]: Login user=a")
@example("Nov 27 05:58:13.1234567 mail p: m")
@example("Nov  5 05:58:13 mail p: m")
@example("Feb 30 05:58:13 mail p: m")
@example("Nov 27 24:00:00 mail p: m")
@example("Nov 27 05:58:13 " + "h" * 255 + " " + "p" * 64 + "[1]: m")
def test_rfc3164_split_equals_the_regex(line):
    same("rfc3164", line)


@settings(max_examples=500, deadline=None)
@given(st.text(MUTATION_CHARS + "NovmailéЖ", max_size=60))
def test_random_text_splits_as_the_regex(line):
    same("rfc3339", line)
    same("rfc3164", line)


@pytest.mark.parametrize("kind", ["rfc3339", "rfc3164"])
def test_non_ascii_lines_are_left_to_the_regexes(kind):
    stamp = "2026-11-27T05:58:13Z" if kind == "rfc3339" else "Nov 27 05:58:13"
    line = f"{stamp} maïl dovecot: imap-login: Login: user=<é>"
    assert c_split(kind, line) is NotImplemented
    envelope = syslog._SPLITTERS[kind](line, NOW)
    assert envelope is not None and envelope.host == "maïl"


def test_bad_arguments_raise():
    assert _envelope is not None, MISSING
    with pytest.raises(TypeError):
        _envelope.rfc3339(b"2026-11-27T05:58:13Z h p: m", Envelope)
    with pytest.raises(TypeError):
        _envelope.rfc3339("2026-11-27T05:58:13Z h p: m", dict)
    with pytest.raises(TypeError):
        _envelope.rfc3164()


def test_the_daemon_splits_in_c():
    assert syslog.ACCELERATED, MISSING
    for kind in ("rfc3339", "rfc3164"):
        assert syslog._SPLITTERS[kind] is not REGEX_SPLITTERS[kind]
