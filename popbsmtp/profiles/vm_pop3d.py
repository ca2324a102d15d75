"""vm-pop3d (virtual-mail POP3 server): profile ``vm-pop3d``.

Modern vm-pop3d writes one line, ``User 'alice' logged in from 192.0.2.3``;
older ones write two: ``Connect from 192.0.2.3`` then, in the same process,
``User 'alice' logged in``.  The two-line form is joined by pid in
:mod:`popbsmtp.policy.sessions`: the connect line alone grants nothing, and the
login line alone carries no address.  In the one-line form the address is
the last field, after the user name; a two-line login always ends with
``logged in``, so a name cannot make it look like the one-line form.

vm-pop3d is not packaged by Debian; the examples are derived from the
format published with the Perl pop-before-smtp and vm-pop3d's source, not
captured.
"""

from popbsmtp.profiles import AUTH, CONNECT, LOGIN, Example, Profile, Rule

P = "Nov 27 04:48:08 mail vm-pop3d"

PROFILE = Profile(
    name="vm-pop3d",
    description="vm-pop3d, one-line and two-line (Connect + logged in, by pid) forms",
    rules=(
        Rule(
            name="login",
            programs=("vm-pop3d",),
            pattern=r"User {user} logged in from {ip}",
            needle="logged in",
            also=("pop",),
            event=LOGIN,
            pid=True,
        ),
        Rule(
            name="connect",
            programs=("vm-pop3d",),
            pattern=r"Connect from {ip}",
            needle="pop",
            event=CONNECT,
            session="pid",
            pid=True,
        ),
        Rule(
            name="auth",
            programs=("vm-pop3d",),
            pattern=r"User {user} logged in",
            needle="logged in",
            also=("pop",),
            event=AUTH,
            session="pid",
            pid=True,
        ),
    ),
    examples=(
        Example(P + "[812]: User 'alice' logged in from 192.0.2.3", "192.0.2.3", "login"),
        Example(P + "[813]: Connect from 2001:db8::5", "2001:db8::5", "connect", event=CONNECT),
        Example(P + "[813]: User 'bob' logged in", None, "auth", event=AUTH),
        Example(
            P + "[814]: User 'x logged in from 6.6.6.6' logged in from 192.0.2.6",
            "192.0.2.6",
            "login",
            note="user name carrying the one-line tail",
        ),
        Example(
            P + "[815]: User 'x logged in from 6.6.6.6' logged in",
            None,
            "auth",
            event=AUTH,
            note="two-line form: the name's address is never used",
        ),
        Example(P + "[816]: Bad password for 'alice' from 192.0.2.3", None, note="failed login"),
        Example(P + "[817]: User 'alice' failed to log in", None, note="failed login"),
        Example(
            "Nov 27 04:48:08 mail vm-pop3d: User 'eve' logged in from 6.6.6.6",
            None,
            note="forged: no pid",
        ),
    ),
)
