"""vpopmail's ``vchkpw`` (qmail POP3/IMAP with qmail-popup/qmail-pop3d).

qmail-pop3d itself logs nothing about logins; vpopmail's checkpassword
program ``vchkpw`` does, under the tag ``vpopmail``: older releases
``vchkpw: login [alice@example.org] from 192.0.2.3``, 5.4+ ``vchkpw-pop3:
(PLAIN) login success alice@example.org:192.0.2.3``.  The address is the
last field and dotted-quad only (it comes from tcpserver's ``TCPREMOTEIP``;
a colon-separated IPv6 address after ``user:`` would be ambiguous).  SMTP
AUTH lines (``vchkpw-smtp``) are not POP/IMAP logins and are not matched.

vpopmail is not packaged by Debian; the examples are derived from its
source (``vchkpw.c``) and published logs, not captured.
"""

from popbsmtp.profiles import LOGIN, Example, Profile, Rule

P = "Nov 27 04:48:08 mail vpopmail[3301]: "

PROFILE = Profile(
    name="vpopmail",
    description="vpopmail vchkpw (qmail pop3d/imap)",
    rules=(
        Rule(
            name="login",
            programs=("vpopmail",),
            pattern=r"vchkpw(?:-pop3|-imap)?: login \[{user}\] from {ip4}",
            needle="login [",
            also=("pop",),
            event=LOGIN,
            pid=True,
        ),
        Rule(
            name="login-success",
            programs=("vpopmail",),
            pattern=r"vchkpw-(?:pop3|imap): \([A-Z0-9-]{1,20}\) login success {user}:{ip4}",
            needle="login success",
            also=("pop",),
            event=LOGIN,
            pid=True,
        ),
    ),
    examples=(
        Example(P + "vchkpw: login [alice@example.org] from 192.0.2.3", "192.0.2.3", "login"),
        Example(
            P + "vchkpw-pop3: (PLAIN) login success bob@example.org:192.0.2.4",
            "192.0.2.4",
            "login-success",
        ),  # fmt: skip
        Example(
            P + "vchkpw-pop3: (PLAIN) login success x:6.6.6.6:192.0.2.5",
            "192.0.2.5",
            "login-success",
            note="address in the user name",
        ),
        Example(
            P + "vchkpw-pop3: login [x] from 6.6.6.6] from 192.0.2.6",
            "192.0.2.6",
            "login",
            note="user name carrying the tail",
        ),
        Example(
            P + "vchkpw-pop3: password fail (pass: 'x') alice@example.org:192.0.2.3",
            None,
            note="failed login",
        ),
        Example(
            P + "vchkpw-pop3: vpopmail user not found login success x:6.6.6.6@:192.0.2.3",
            None,
            note="failed login whose name forges a success",
        ),
        Example(
            P + "vchkpw-smtp: (PLAIN) login success alice@example.org:192.0.2.3",
            None,
            note="SMTP AUTH, not a POP/IMAP login",
        ),
        Example(
            "Nov 27 04:48:08 mail vpopmail: vchkpw: login [eve] from 6.6.6.6",
            None,
            note="forged: no pid",
        ),
    ),
)
