"""Property tests: hostile log input never raises and never grants a wrong address.

Over the envelope parser, every profile (through one Matcher over all of
them), the address normaliser and the file tail: random bytes, invalid
UTF-8, NUL bytes, 10 MB lines without a newline, timestamps far in the past
and future, Unicode look-alike digits, IPv6 zone ids, over-long IPv6,
unspecified/broadcast/multicast addresses and ``unknown``.  And what else the
daemon reads: control requests, state files and config values (huge and
nested numbers and documents).  The oracles are in fuzz_oracle.py (shared
with the atheris target).
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc

import pytest
from fuzz_oracle import (
    ATTACKER,
    NOW,
    all_profiles_matcher,
    check_config_value,
    check_control_request,
    check_genuine,
    check_login,
    check_state_file,
    forged_tails,
    genuine_lines,
    matcher_for,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import dovecot_login, write_config

from popbsmtp import config
from popbsmtp.daemon.service import Service
from popbsmtp.parse.addresses import InvalidAddress, postfix_key
from popbsmtp.parse.envelope import EnvelopeParser
from popbsmtp.profiles import registry
from popbsmtp.sources.tail import FileTail

MATCHER = all_profiles_matcher()
GENUINE = genuine_lines()
FRAGMENTS = sorted(
    {w for p in registry().values() for e in p.examples for w in e.line.split(" ")}
    | {
        ATTACKER,
        "unknown",
        "0.0.0.0",
        "::",
        "255.255.255.255",
        "224.0.0.1",
        "ff02::1",
        "fe80::1%eth0",
        "1:2:3:4:5:6:7:8:9",
        "\x00",
        "\xff",
        "١٢٧.٠.٠.١",
        "１２７.0.0.1",
    }
)
HOSTILE_TEXT = st.text(
    st.characters(exclude_characters="\n\r", exclude_categories=["Cs"]), max_size=80
)
SPECIAL_ADDRESSES = [
    "unknown",
    "",
    "0.0.0.0",
    "0.1.2.3",
    "::",
    "::0",
    "0:0:0:0:0:0:0:0",
    "255.255.255.255",
    "224.0.0.1",
    "239.255.255.250",
    "ff02::1",
    "FF05::2",
    "::ffff:0.0.0.0",
    "::ffff:255.255.255.255",
    "::ffff:224.0.0.1",
    "fe80::1%eth0",
    "fe80::1%25eth0",
    "[::1%lo]",
    "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7:8::",
    "2001:db8::" + "0" * 60 + "1",
    "1.2.3.4.5",
    "1.2.3",
    "256.1.1.1",
    "01.2.3.4",
    " 1.2.3.4",
    "1.2.3.4 ",
    "1.2.3.4\x00",
    "１２７.0.0.1",
    "١٢٧.٠.٠.١",
    "127.0.0.¹",
    "𝟏𝟐𝟕.0.0.1",
    "127.0.0.1/8",
    "[1.2.3.4",
    "::1]",
]
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.binary(max_size=4096))
def test_random_bytes(line):
    check_login(MATCHER.match(line, NOW))


@FAST
@given(st.lists(st.sampled_from(FRAGMENTS) | HOSTILE_TEXT, max_size=40))
def test_shuffled_fragments_of_real_lines(words):
    line = " ".join(words).encode("utf-8", "surrogatepass")
    check_login(MATCHER.match(line, NOW))
    check_login(MATCHER.match(line.replace(b" ", b"\xff", 1), NOW))  # invalid UTF-8


@FAST
@given(st.sampled_from(GENUINE), st.data())
def test_hostile_user_never_moves_the_address(genuine, data):
    pieces = st.sampled_from(forged_tails(genuine)) | HOSTILE_TEXT
    user = "".join(data.draw(st.lists(pieces, max_size=6)))
    line = genuine.with_user(user).encode("utf-8", "surrogatepass")
    check_genuine(genuine, matcher_for(genuine.log_format).match(line, NOW))


def test_every_profile_has_a_genuine_line_under_test():
    assert {g.profile for g in GENUINE} == {
        p.name for p in registry().values() if any(e.ip and e.event == "login" for e in p.examples)
    }
    for genuine in GENUINE:  # the cut is right: the unmodified line grants its address
        login = matcher_for(genuine.log_format).match(genuine.with_user(genuine.user).encode(), NOW)
        assert login is not None and login.ip == genuine.ip, genuine


@FAST
@given(st.text(max_size=70))
def test_address_normaliser_total(text):
    try:
        key = postfix_key(text)
    except InvalidAddress:
        return
    assert key.isascii() and postfix_key(key) == key


@pytest.mark.parametrize("text", SPECIAL_ADDRESSES)
def test_special_addresses_are_refused(text):
    with pytest.raises(InvalidAddress):
        postfix_key(text)


@pytest.mark.parametrize("text", [t for t in SPECIAL_ADDRESSES if t.strip() == t])
def test_special_addresses_in_a_genuine_line_grant_nothing(text):
    for genuine in GENUINE:
        line = genuine.with_user(genuine.user).replace(genuine.ip, text)
        login = matcher_for(genuine.log_format).match(line.encode("utf-8"), NOW)
        check_login(login)
        assert login is None or login.ip is None, (genuine.profile, text, login)


YEARS = st.integers(min_value=1, max_value=9999)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The real core loop's grant decision (not started: no files, no threads)."""
    directory = tmp_path_factory.mktemp("fuzz")
    return Service(config.load(str(write_config(directory, grace="30m"))), dry_run=True)


@FAST
@given(YEARS, st.integers(0, 11), st.integers(-14, 14), st.sampled_from(["", ".9999999999", "Z"]))
def test_far_timestamps_are_granted_for_grace_from_now_at_most(service, year, month, tz, frac):
    zone = "Z" if frac == "Z" else f"{tz:+03d}:00"
    stamp = f"{year:04d}-{month + 1:02d}-28T23:59:59{frac if frac != 'Z' else ''}{zone}"
    line = dovecot_login("192.0.2.1").split(" ", 1)[1]
    envelope = EnvelopeParser("auto").parse(f"{stamp} {line}", NOW)
    assert envelope is None or envelope.time == envelope.time  # no NaN
    svc = service
    svc.table.clear()
    login = svc.matcher.match(f"{stamp} {line}".encode(), NOW)
    if login is not None:
        svc.handle(login, NOW)
    grant = svc.table.get("192.0.2.1")
    grace = svc.settings.grace
    if grant is not None:
        assert login is not None and login.time + grace > NOW, "an old login was granted"
        assert grant.expires <= NOW + grace, "a future stamp extended the grant"


@FAST
@given(
    st.sampled_from(["Jan", "Feb", "Dec", "Xyz", "jan"]), st.integers(0, 99), st.text(max_size=8)
)
def test_bsd_timestamps_never_raise(month, day, rest):
    EnvelopeParser("auto").parse(f"{month} {day:2d} 25:61:61{rest} host prog[1]: msg", NOW)


def test_ten_megabyte_line_without_newline_is_bounded(tmp_path):
    log = tmp_path / "mail.log"
    with open(log, "wb") as handle:
        handle.write(os.urandom(5 << 20).replace(b"\n", b"x") + b"A" * (5 << 20))
    tail = FileTail(str(log), max_line_length=8192)
    tracemalloc.start()
    try:
        assert tail.read() == []
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"reading a 10 MB line took {peak} bytes"
    assert tail.stats.overlong == 1
    with open(log, "ab") as handle:
        handle.write(b"still the same line\n" + dovecot_login("192.0.2.8").encode())
    lines = tail.read()
    assert len(lines) == 1 and tail.stats.overlong == 1
    check_login(login := MATCHER.match(lines[0], time.time()))
    assert login is not None and login.ip == "192.0.2.8"
    tail.close()
    assert MATCHER.match(b"x" * (10 << 20), NOW) is None  # the matcher bounds it too


# -- control requests, state files, config values --------------------------------

NUMBERS = (
    st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([1e30, 4e9, -1, 0, 2**63, 2**64, 10**400])
)
JSON = st.recursive(
    st.none() | st.booleans() | NUMBERS | HOSTILE_TEXT | st.sampled_from(FRAGMENTS),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(HOSTILE_TEXT, inner, max_size=4),
    max_leaves=12,
)
NESTED = st.tuples(st.integers(0, 120_000), st.sampled_from([b"[", b"{", b'{"a":'])).map(
    lambda t: t[1] * t[0]
)


def _dumps(value: object) -> bytes:
    return json.dumps(value, default=str).encode()


REQUESTS = (
    st.binary(max_size=5000)
    | NESTED
    | JSON.map(_dumps)
    | st.fixed_dictionaries(
        {"op": st.sampled_from(["add", "remove", "flush", "save", "grant-all"]) | JSON},
        optional={"ip": st.sampled_from(FRAGMENTS) | JSON, "grace": NUMBERS | JSON},
    ).map(_dumps)
)
POSITIONS = st.fixed_dictionaries(
    {k: NUMBERS for k in ("dev", "inode", "offset", "head_len")}
    | {"path": HOSTILE_TEXT, "head": HOSTILE_TEXT},
    optional={"mtime_ns": NUMBERS, "newest": JSON},
)
ROWS = st.lists(
    st.tuples(st.sampled_from(FRAGMENTS), NUMBERS, HOSTILE_TEXT, HOSTILE_TEXT).map(list) | JSON,
    max_size=5,
)
STATES = (
    st.binary(max_size=5000)
    | NESTED
    | st.fixed_dictionaries(
        {"version": st.just(1) | JSON, "grants": ROWS},
        optional={"saved": NUMBERS | JSON, "position": POSITIONS | JSON},
    ).map(_dumps)
)


@FAST
@given(REQUESTS)
def test_control_requests_are_applied_as_checked_or_set_aside(tmp_path_factory, data):
    check_control_request(str(tmp_path_factory.mktemp("state")), data)


@FAST
@given(STATES)
def test_state_files_load_valid_or_are_set_aside(tmp_path_factory, data):
    check_state_file(str(tmp_path_factory.mktemp("state")), data)


@FAST
@given(
    st.sampled_from([opt.name for opt in config.SCHEMA]),
    HOSTILE_TEXT
    | st.sampled_from(["9" * 400, "99999999999d", "30d", "31d", "1e309", "0", "-1", "0x10"])
    | st.from_regex(r"\A[0-9]{1,30}(\.[0-9]{0,5})?[smhd]?\Z"),
)
def test_config_values_parse_bounded_or_fail_short(name, text):
    check_config_value(name, text)
