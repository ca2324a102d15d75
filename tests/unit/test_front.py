"""A socketmap front's configuration and its mirror's staleness, with fake clocks.

The mirror publishes to the real socketmap writer (not opened: its answer()
is called directly); tests/integration/test_pgsql_front.py runs the whole
front against a real PostgreSQL and smtpd.
"""

from __future__ import annotations

import math

import pytest

from popbsmtp import config
from popbsmtp.config.distros import Distro
from popbsmtp.errors import ConfigError
from popbsmtp.grants.mirror import Mirror
from popbsmtp.maps import MapSpec
from popbsmtp.maps.socketmap import Writer
from popbsmtp.sources.pgsql import _collect

DEBIAN = Distro("debian", "debian", "/var/log/mail.log", "rfc3339")
SOCKETMAP = "socketmap:unix:/run/popbsmtp/socketmap:popbsmtp"
OK, NOTFOUND = b"OK OK", b"NOTFOUND "


def load(tmp_path, text):
    path = tmp_path / "p.conf"
    path.write_text("[popbsmtp]\n" + text)
    return config.load(str(path), distro=DEBIAN)


def test_front_settings(tmp_path):
    settings = load(tmp_path, f"map = {SOCKETMAP}\ngrants_from = pgsql:/etc/postfix/pg.cf\n")
    assert settings.grants_from == "pgsql:/etc/postfix/pg.cf"
    assert settings.stale_after == 5.0
    assert load(tmp_path, "map = lmdb:/x\n").grants_from == "log"
    assert load(tmp_path, f"map = {SOCKETMAP}\nstale_after = 1m\n").stale_after == 60


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "map = lmdb:/x\ngrants_from = pgsql:/etc/pg.cf\n",
            r"p\.conf:3: grants_from: .*socketmap front: set map = socketmap:",
        ),
        ("grants_from = pgsql:pg.cf\n", r"p\.conf:3: grants_from: 'pg.cf' is not an absolute"),
        ("grants_from = mysql:/x\n", r"p\.conf:3: grants_from: 'mysql:/x' is not log or pgsql"),
        ("stale_after = 0.5s\n", r"p\.conf:3: stale_after: '0.5s' is outside 1s to 1m"),
        ("stale_after = 2m\n", r"p\.conf:3: stale_after: '2m' is outside 1s to 1m"),
        ("stale_after = 1e400\n", r"p\.conf:3: stale_after: .*not a duration"),
    ],
)
def test_front_settings_errors_name_file_line_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, f"map = {SOCKETMAP}\n" + text if "map =" not in text else text)


class Clocks:
    def __init__(self) -> None:
        self.wall = 1_000_000.0
        self.mono = 100.0


@pytest.fixture
def front():
    clocks = Clocks()
    writer = Writer(MapSpec.parse(SOCKETMAP), "OK")
    writer.clock = lambda: clocks.wall
    writer.monotonic = lambda: clocks.mono
    mirror = Mirror(writer, stale_after=5.0, max_entries=3, monotonic=lambda: clocks.mono)
    return clocks, writer, mirror


def ask(writer, key):
    return writer.answer("popbsmtp", key)


def test_temp_until_the_first_full_read_then_exact_answers(front):
    clocks, writer, mirror = front
    assert ask(writer, "192.0.2.1").startswith(b"TEMP ")
    mirror.update({"192.0.2.1"}, {"192.0.2.1": clocks.wall + 60}, clocks.mono)
    assert ask(writer, "192.0.2.1").startswith(b"TEMP ")  # a partial read proves nothing
    mirror.load({"192.0.2.1": clocks.wall + 60, "2001:DB8::1": clocks.wall + 60}, clocks.mono)
    assert ask(writer, "192.0.2.1") == OK
    assert ask(writer, "2001:db8::1") == OK
    assert ask(writer, "2001:db8::1:5") == NOTFOUND
    clocks.wall += 61  # expiry is checked at lookup time, whatever the database said
    assert ask(writer, "192.0.2.1") == NOTFOUND


def test_stale_mirror_answers_temp_and_recovers_only_with_a_full_read(front):
    clocks, writer, mirror = front
    mirror.load({"192.0.2.1": clocks.wall + 3600}, asked_at=clocks.mono)
    clocks.mono += 4.9
    assert ask(writer, "192.0.2.1") == OK
    mirror.confirm(clocks.mono - 1)  # a heartbeat asked 1 s ago: fresh for 5 s from then
    clocks.mono += 3.9
    assert ask(writer, "192.0.2.1") == OK
    mirror.lost()
    mirror.confirm(clocks.mono)  # nothing after a loss extends the deadline
    mirror.update({"192.0.2.1"}, {"192.0.2.1": clocks.wall + 3600}, clocks.mono)
    clocks.mono += 0.1
    assert ask(writer, "192.0.2.1").startswith(b"TEMP ")
    assert ask(writer, "203.0.113.5").startswith(b"TEMP ")  # never OK, never NOTFOUND
    mirror.load({"192.0.2.1": clocks.wall + 3600}, asked_at=clocks.mono)
    assert ask(writer, "192.0.2.1") == OK
    assert mirror.fresh_until() == clocks.mono + 5.0
    # An older answer arriving late never moves the deadline back or forward wrongly.
    mirror.confirm(clocks.mono - 10)
    assert mirror.fresh_until() == clocks.mono + 5.0


def test_partial_reads_add_shorten_and_withdraw(front):
    clocks, writer, mirror = front
    mirror.load({"192.0.2.1": clocks.wall + 60, "192.0.2.2": clocks.wall + 60}, clocks.mono)
    # Asked for three keys: one shortened, one gone (no unexpired row), one new.
    asked = {"192.0.2.1", "192.0.2.2", "192.0.2.3"}
    mirror.update(asked, {"192.0.2.1": clocks.wall + 1, "192.0.2.3": clocks.wall + 60}, clocks.mono)
    assert ask(writer, "192.0.2.2") == NOTFOUND
    assert ask(writer, "192.0.2.3") == OK
    assert ask(writer, "192.0.2.1") == OK
    clocks.wall += 1
    assert ask(writer, "192.0.2.1") == NOTFOUND
    assert writer.keys() == set(mirror.expiries) == {"192.0.2.1", "192.0.2.3"}
    mirror.load({"192.0.2.3": clocks.wall + 60}, clocks.mono)
    assert writer.keys() == {"192.0.2.3"}


def test_the_mirror_holds_at_most_max_entries(front):
    clocks, writer, mirror = front
    rows = {f"192.0.2.{n}": clocks.wall + 60 for n in range(1, 6)}
    mirror.load(rows, clocks.mono)
    assert len(mirror.expiries) == 3 and mirror.refused == 2
    mirror.update({"198.51.100.1"}, {"198.51.100.1": clocks.wall + 60}, clocks.mono)
    assert "198.51.100.1" not in mirror.expiries and len(writer.keys()) == 3
    assert math.isfinite(mirror.fresh_until())


@pytest.mark.parametrize(
    ("payload", "everything", "keys"),
    [
        ("192.0.2.1", False, {"192.0.2.1"}),
        ("", True, set()),  # TRUNCATE
        ("x" * 201, True, set()),
        ("a\nb", True, set()),
    ],
)
def test_notification_payloads(payload, everything, keys):
    found: set = set()
    assert _collect(payload, found) is everything
    assert found == keys
