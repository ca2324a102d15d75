"""GNU pop3d (GNU Mailutils): profile ``gnu-pop3d``.

The module is ``gnu_pop3d`` (Python names cannot contain ``-``); the word
the administrator writes in ``profiles =`` is ``gnu-pop3d``, the daemon's
name.  Mailutils logs ``User 'alice' logged in with mailbox
'/var/mail/alice' from 192.0.2.3`` (tag ``gnu-pop3d``, or ``pop3d`` as
Debian's mailutils-pop3d installs it).  The mailbox path may contain the
user name; the address is the last field and the closing quote before
`` from `` is server-written, so the rule is anchored there.

Derived from Mailutils' source and the format published with the Perl
pop-before-smtp, not captured: Debian's mailutils-pop3d conflicts with
Dovecot's packages like Cyrus's do, and no unpacked-run harness (see
``tests/integration/cyrus_server.py``) exists for it yet.
"""

from popbsmtp.profiles import LOGIN, Example, Profile, Rule

P = "Nov 27 04:48:08 mail "

PROFILE = Profile(
    name="gnu-pop3d",
    description="GNU Mailutils pop3d (gnu-pop3d)",
    rules=(
        Rule(
            name="login",
            programs=("gnu-pop3d", "pop3d"),
            pattern=r"User {user} logged in with mailbox ['`][^\n]{0,1024}' from {ip}",
            needle="logged in",
            also=("pop",),
            event=LOGIN,
            pid=True,
        ),
    ),
    examples=(
        Example(
            P + "gnu-pop3d[2211]: User 'alice' logged in with mailbox '/var/mail/alice' "
            "from 192.0.2.3",
            "192.0.2.3",
            "login",
        ),
        Example(
            P + "pop3d[2212]: User `bob' logged in with mailbox `/var/mail/bob' from 2001:db8::4",
            "2001:db8::4",
            "login",
        ),
        Example(
            P + "gnu-pop3d[2213]: User 'x from 6.6.6.6' logged in with mailbox "
            "'/var/mail/x from 6.6.6.6' from 192.0.2.5",
            "192.0.2.5",
            "login",
            note="address in the user name and mailbox",
        ),
        Example(
            P + "gnu-pop3d[2214]: User 'x' logged in with mailbox '/var/mail/x' from 6.6.6.6'",
            None,
            note="a name ending the line: the closing quote is not the server's",
        ),
        Example(
            P + "gnu-pop3d[2215]: User name 'alice': authentication failed from 192.0.2.3",
            None,
            note="failed login",
        ),
        Example(
            P + "gnu-pop3d: User 'eve' logged in with mailbox '/var/mail/eve' from 6.6.6.6",
            None,
            note="forged: no pid",
        ),
    ),
)
