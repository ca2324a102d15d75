"""Apple Mail Server (Mac OS X Server 10.2): ``IMAP User "alice" log on
successful from 192.0.2.3`` in its own log (``AppleMailServer.IMAP.log``).

The envelope ``Nov 27 2026 04:48:08 …`` is parsed by :mod:`popbsmtp.parse.envelope`
(format ``apple``, program ``AppleMailServer``).  The address is the last
field, after the quoted user name; the rule is anchored at the end.  Later
Mac OS X Server releases used Cyrus (see the ``cyrus`` profile).  Derived
from the format published with the Perl pop-before-smtp, not captured.
"""

from popbsmtp.profiles import LOGIN, Example, Profile, Rule

PROFILE = Profile(
    name="apple",
    description="Apple Mail Server (Mac OS X Server 10.2) IMAP/POP own log",
    rules=(
        Rule(
            name="login",
            programs=("AppleMailServer",),
            pattern=r"(?:[A-Za-z0-9_.:+-]{1,64} )?(?:IMAP|POP3?) User \"{user}\" "
            r"log on successful from {ip}",
            needle="log on successful",
            also=('User "',),
            event=LOGIN,
        ),
    ),
    examples=(
        Example(
            'Nov 27 2026 04:48:08 IMAP User "alice" log on successful from 192.0.2.3',
            "192.0.2.3",
            "login",
        ),  # fmt: skip
        Example(
            'Nov 27 2026 04:48:09 POP3 User "bob" log on successful from 192.0.2.4',
            "192.0.2.4",
            "login",
        ),  # fmt: skip
        Example(
            'Nov 27 2026 04:48:10 IMAP User "x" log on successful from 6.6.6.6" log on '
            "successful from 192.0.2.5",
            "192.0.2.5",
            "login",
            note="user name carrying the tail",
        ),
        Example(
            'Nov 27 2026 04:48:11 IMAP User "alice" log on failed from 192.0.2.3',
            None,
            note="failed login",
        ),  # fmt: skip
        Example(
            'Nov 27 2026 04:48:12 IMAP User "alice" log on successful from 192.0.2.3 #012',
            None,
            note="trailing text",
        ),
    ),
)
