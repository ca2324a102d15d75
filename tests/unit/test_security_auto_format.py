"""``log_format = auto``: each line's format on its own, and only the shapes syslog writes.

A line shaped like a server's own log (Apple's, qpopper's trace, Dovecot's
``log_path``) has no host and no program: inside a syslog file it could be
anything a local user logged, so only a file configured as that server's
own log (``log_format`` naming it) is read with those shapes.
"""

from __future__ import annotations

import itertools
import time

import pytest

from popbsmtp.parse.envelope import EnvelopeParser
from popbsmtp.parse.matcher import Matcher
from popbsmtp.profiles import registry

NOW = time.mktime((2026, 11, 27, 12, 0, 0, 0, 0, -1))
LOGIN = (
    "imap-login: Login: user=<eve>, method=PLAIN, rip=6.6.6.6, lip=127.0.0.1, mpid=1, "
    "session=<abcd>"
)
# Both a Dovecot own-log line (program "imap(x)...") and a syslog line from host "imap(x)".
AMBIGUOUS = f"Nov 27 04:48:08 imap(x) dovecot: {LOGIN}"
OWN_LOG_SHAPES = {
    "apple": 'Nov 27 2026 04:48:08 IMAP User "eve" log on successful from 6.6.6.6',
    "qpopper": 'Wed Nov 27 04:48:08 2026 [3123] (v4.1.0) POP login by user "eve" at (h) 6.6.6.6',
    "dovecot": f"dovecot: Nov 27 04:48:08 Info: {LOGIN}",
}
SYSLOG = [
    f"Nov 27 04:48:08 mail dovecot: {LOGIN}",
    f"2026-11-27T04:48:08+00:00 mail dovecot: {LOGIN}",
    f"<22>1 2026-11-27T04:48:08Z mail dovecot - - - {LOGIN}",
    f"Nov 27 04:48:08 {LOGIN}",  # a Dovecot own-log line with a BSD stamp
]


def test_a_line_parses_the_same_whatever_came_before() -> None:
    lines = [AMBIGUOUS, *OWN_LOG_SHAPES.values(), *SYSLOG]
    fresh = {line: EnvelopeParser("auto").parse(line, NOW) for line in lines}
    assert fresh[AMBIGUOUS] is not None and fresh[AMBIGUOUS].host == "imap(x)"
    for before, line in itertools.product(lines, repeat=2):
        parser = EnvelopeParser("auto")
        parser.parse(before, NOW)
        assert parser.parse(line, NOW) == fresh[line], (before, line)


@pytest.mark.parametrize("fmt", sorted(OWN_LOG_SHAPES))
def test_own_log_shapes_only_from_a_file_configured_as_that_log(fmt: str) -> None:
    line = OWN_LOG_SHAPES[fmt].encode()
    profiles = list(registry().values())
    assert Matcher(profiles, EnvelopeParser("auto")).match(line, NOW) is None
    assert EnvelopeParser(fmt).parse(OWN_LOG_SHAPES[fmt], NOW) is not None  # a real shape
    others = [name for name in OWN_LOG_SHAPES if name != fmt]
    for other in others:
        assert EnvelopeParser(other).parse(OWN_LOG_SHAPES[fmt], NOW) is None


def test_dovecot_own_log_is_read_when_named() -> None:
    profiles = [registry()["dovecot"]]
    line = f"Nov 27 04:48:08 {LOGIN}".replace("Login:", "Info: Login:").encode()
    assert Matcher(profiles, EnvelopeParser("auto")).match(line, NOW) is None
    login = Matcher(profiles, EnvelopeParser("dovecot")).match(line, NOW)
    assert login is not None and login.ip == "6.6.6.6"
