"""Solid POP3 (``spop3d``, solid-pop3d): profile ``spop3d``.

Built with ``--enable-logextend`` it logs ``user alice authenticated -
192.0.2.3``; without, ``connect from 192.0.2.3`` and later, in the same
process, ``user alice authenticated``, joined by pid in
:mod:`popbsmtp.policy.sessions`.  The one-line address is the last field, after
the user name; a two-line login always ends with ``authenticated``, so a
name cannot make it look like the one-line form.

solid-pop3d's Debian package conflicts with Dovecot's like Cyrus's do, and
no unpacked-run harness (see ``tests/integration/cyrus_server.py``) exists
for it yet; the examples are derived from its source (``src/main.c``) and the
format published with the Perl pop-before-smtp, not captured.
"""

from popbsmtp.profiles import AUTH, CONNECT, LOGIN, Example, Profile, Rule

_PROGRAMS = ("spop3d", "solid-pop3d")
P = "Nov 27 04:48:08 mail spop3d"

PROFILE = Profile(
    name="spop3d",
    description="Solid POP3 (spop3d), with or without --enable-logextend",
    rules=(
        Rule(
            name="login",
            programs=_PROGRAMS,
            pattern=r"user {user} authenticated - {ip}",
            needle="pop",
            event=LOGIN,
            pid=True,
        ),
        Rule(
            name="connect",
            programs=_PROGRAMS,
            pattern=r"connect from {ip}",
            needle="pop",
            event=CONNECT,
            session="pid",
            pid=True,
        ),
        Rule(
            name="auth",
            programs=_PROGRAMS,
            pattern=r"user {user} authenticated",
            needle="pop",
            event=AUTH,
            session="pid",
            pid=True,
        ),
    ),
    examples=(
        Example(P + "[701]: user alice authenticated - 192.0.2.3", "192.0.2.3", "login"),
        Example(P + "[702]: connect from 192.0.2.4", "192.0.2.4", "connect", event=CONNECT),
        Example(P + "[702]: user bob authenticated", None, "auth", event=AUTH),
        Example(
            P + "[703]: user x authenticated - 6.6.6.6 authenticated - 2001:db8::7",
            "2001:db8::7",
            "login",
            note="user name carrying the one-line tail",
        ),
        Example(
            P + "[704]: user x authenticated - 6.6.6.6 authenticated",
            None,
            "auth",
            event=AUTH,
            note="two-line form: the name's address is never used",
        ),
        Example(
            P + "[705]: authentication failed for user alice - 192.0.2.3", None, note="failed login"
        ),  # fmt: skip
        Example(P + "[706]: user alice: bad password", None, note="failed login"),
        Example(
            "Nov 27 04:48:08 mail spop3d: user eve authenticated - 6.6.6.6",
            None,
            note="forged: no pid",
        ),
    ),
)
