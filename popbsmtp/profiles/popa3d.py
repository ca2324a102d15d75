"""popa3d (Openwall's POP3 server), two-line form joined by pid.

popa3d logs ``Session from 192.0.2.3`` when a client connects and
``Authentication passed for alice`` in the same process after a successful
login; :mod:`popbsmtp.policy.sessions` joins them by pid.  Neither line alone
grants anything.  The user name ends the second line, so it is never
searched for an address.  (A contributed patch once appended ``-- [addr]``
to the second line; that shape is *not* supported: on an unpatched server a
user named ``x -- [6.6.6.6]`` would produce exactly that line.)

popa3d's Debian package conflicts with Dovecot's like Cyrus's do, and no
unpacked-run harness (see ``tests/integration/cyrus_server.py``) exists for
it yet; the examples are derived from popa3d's source (``pop_auth.c``,
``standalone.c``) and the format published with the Perl pop-before-smtp,
not captured.
"""

from popbsmtp.profiles import AUTH, CONNECT, Example, Profile, Rule

P = "Nov 27 04:48:08 mail popa3d"

PROFILE = Profile(
    name="popa3d",
    description="popa3d (Session from + Authentication passed, joined by pid)",
    rules=(
        Rule(
            name="connect",
            programs=("popa3d",),
            pattern=r"Session from {ip}",
            needle="pop",
            event=CONNECT,
            session="pid",
            pid=True,
        ),
        Rule(
            name="auth",
            programs=("popa3d",),
            pattern=r"Authentication passed for {user}",
            needle="pop",
            event=AUTH,
            session="pid",
            pid=True,
        ),
    ),
    examples=(
        Example(P + "[901]: Session from 192.0.2.3", "192.0.2.3", "connect", event=CONNECT),
        Example(P + "[901]: Authentication passed for alice", None, "auth", event=AUTH),
        Example(
            P + "[902]: Session from ::ffff:192.0.2.4", "192.0.2.4", "connect", event=CONNECT
        ),  # fmt: skip
        Example(
            P + "[903]: Authentication passed for x -- [6.6.6.6]",
            None,
            "auth",
            event=AUTH,
            note="an address in the user name is never used",
        ),
        Example(P + "[904]: Authentication failed for UNKNOWN USER", None, note="failed login"),
        Example(P + "[905]: Authentication failed for alice", None, note="failed login"),
        Example(P + "[906]: Session from 192.0.2.3 x", None, note="trailing text"),
        Example(
            "Nov 27 04:48:08 mail popa3d: Authentication passed for eve",
            None,
            note="forged: no pid",
        ),
    ),
)
