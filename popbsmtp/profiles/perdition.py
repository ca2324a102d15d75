"""Perdition (POP3/IMAP proxy): successful ``Auth:`` lines.

Perdition logs ``Auth: <client>[:port]-><local>[:port] … status="ok"``;
older releases write ``user="…" server="…" port="…"`` between, newer ones
``client-secure=… authorisation_id=… authentication_id="…" server="…"
protocol=… server-secure=…``.  The client address is the *first* field,
server-written before any user text, and the line must end in the server's
``status="ok"``; whatever the user supplied sits between and cannot move
either end, so the rule accepts any text there (bounded).  Failures end in
another status.  Only dotted-quad clients are recognised: perdition's
``addr:port`` form would make IPv6 ambiguous, and its IPv6 rendering is not
documented.

Perdition is packaged by Debian, but a test would need a back-end server
behind it and no harness runs it yet; the examples are derived from
perdition's source (``perdition/perdition.c``, the ``Auth:`` log call) and
published logs, not captured.
"""

from popbsmtp.profiles import LOGIN, Example, Profile, Rule

_PROGRAMS = (
    "perdition", "perdition.imap4", "perdition.imap4s", "perdition.imaps",
    "perdition.pop3", "perdition.pop3s", "perdition.managesieve",
)  # fmt: skip
P = "Nov 27 04:48:08 mail perdition.pop3[6001]: "

PROFILE = Profile(
    name="perdition",
    description='Perdition POP3/IMAP proxy (Auth: … status="ok")',
    rules=(
        Rule(
            name="auth",
            programs=_PROGRAMS,
            pattern=r"Auth: {ip4}(?::[0-9]{1,5})?->[0-9A-Fa-f:.]{2,64} "
            r"(?:user|client-secure)={user} status=\"ok\"",
            needle="Auth: ",
            event=LOGIN,
            pid=True,
        ),
    ),
    examples=(
        Example(
            P + 'Auth: 192.0.2.3->198.51.100.1 user="alice" server="imap.example.com" '
            'port="143" status="ok"',
            "192.0.2.3",
            "auth",
        ),
        Example(
            P + "Auth: 192.0.2.4:40312->198.51.100.1:110 client-secure=plaintext "
            'authorisation_id=NONE authentication_id="bob" server="10.0.0.2:110" '
            'protocol=POP3 server-secure=plaintext status="ok"',
            "192.0.2.4",
            "auth",
        ),
        Example(
            P + "Auth: 192.0.2.5:40313->198.51.100.1:110 client-secure=plaintext "
            'authorisation_id=NONE authentication_id="x" status="ok" Auth: 6.6.6.6" '
            'server="10.0.0.2:110" protocol=POP3 server-secure=plaintext status="ok"',
            "192.0.2.5",
            "auth",
            note="user text cannot move the first field",
        ),
        Example(
            P + "Auth: 192.0.2.6:40314->198.51.100.1:110 client-secure=plaintext "
            'authorisation_id=NONE authentication_id="x status="ok"" server="10.0.0.2:110" '
            'protocol=POP3 server-secure=plaintext status="failed"',
            None,
            note='failed login with status="ok" in the name',
        ),
        Example(
            P + "Fatal error authenticating user: alice from 192.0.2.3",
            None,
            note="failed login",
        ),
        Example(
            'Nov 27 04:48:08 mail perdition: Auth: 6.6.6.6->198.51.100.1 user="eve" status="ok"',
            None,
            note="forged: no pid",
        ),
    ),
)
