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
from popbsmtp.parse.matcher import Matcher
from popbsmtp.policy import Policy
from popbsmtp.profiles import select

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
        matcher = Matcher(select(["auto"]))
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
    logins = summary["matched"][f"{server}/login"]
    assert logins >= 3
    assert summary["matched"][f"{server}/logout"] == logins
    assert "6.6.6.6" not in out.getvalue()  # no event carries a forged address
