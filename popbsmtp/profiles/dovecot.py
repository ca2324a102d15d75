"""Dovecot 2.1 and later (2.3, 2.4): POP3/IMAP logins and logouts.

Covers both ways Dovecot logs:

- syslog, tag ``dovecot``: ``imap-login: Login: user=<…>, method=…, rip=…,
  lip=…, mpid=…[, TLS|, secured], session=<…>``;
- its own ``log_path``/``info_log_path`` file, where the envelope parser
  (:mod:`popbsmtp.parse.envelope`, format ``dovecot``) reports program ``dovecot``
  and the message carries Dovecot's level: ``imap-login: Info: Login: …``.

The user name sits inside ``<…>`` and everything after it is server-written
with fixed character classes, so the rule anchors on that tail and a name
containing ``rip=6.6.6.6`` authorizes nothing.  Genuine 2.1+ login lines
always carry ``mpid=`` and ``session=<…>``; the rule requires both (a cheap
check against naive forgeries).  Dovecot 1.x and 2.0 lack them: see the
``dovecot1`` profile, which is never part of ``auto``.

Sessions: the mail process logs the end of a session as
``imap(user)<pid><session>: [Info: ]Disconnected: Logged out …`` (or
``Connection closed``, ``Disconnected for inactivity`` …) without the
address; the ``session=<…>`` id of the login line is the link.

Examples were captured from Dovecot 2.3.19.1 (Debian 12) by
``tests/integration/dovecot_server.py`` (real Dovecot, real rsyslog, on
loopback; see ``tests/profiles/data/``).  Dovecot 2.4 keeps the same
rendered shape (its ``login_log_format_elements`` default produces the same
fields in the same order); the 2.4 example is derived from its documentation,
not captured.
"""

from popbsmtp.profiles import LOGIN, LOGOUT, Example, Profile, Rule

SERVICES = r"(?:pop3|imap|submission|managesieve)"
SESSION_ID = r"(?P<session>[A-Za-z0-9+/]{1,64})"
_LOGIN_TAIL = (
    r", method=[A-Za-z0-9_-]{1,32}, rip={ip}, lip=[0-9A-Fa-f:.]{2,45}, mpid=[0-9]{1,10}"
    r"(?:, (?:TLS|secured|TLS handshaking))?, session=<" + SESSION_ID + ">"
)
# Everything after "<pid><session>: " is server text; a session ends with one of these.
_ENDS = r"(?:Disconnected|Logged out|Connection closed|Server shutting down)"

C = "2026-11-27T05:58:13.516682+00:00 mail dovecot: "  # captured, rsyslog RFC 3339
T = "Nov 27 05:58:13 mail dovecot: "  # captured, rsyslog traditional
OWN = "Nov 27 05:58:29 "  # captured, Dovecot's own log_path

PROFILE = Profile(
    name="dovecot",
    description="Dovecot 2.1+ (2.3, 2.4) pop3/imap via syslog or its own log_path; logouts",
    rules=(
        Rule(
            name="login",
            programs=("dovecot",),
            pattern=SERVICES + r"-login: (?:Info: )?Login: user=<{user}>" + _LOGIN_TAIL,
            needle="log",
            event=LOGIN,
            session="session",
        ),
        Rule(
            name="logout",
            programs=("dovecot",),
            pattern=SERVICES
            + r"\({user}\)<[0-9]{1,10}><"
            + SESSION_ID
            + r">: (?:Info: )?"
            + _ENDS
            + r".{0,1024}",
            needle=")<",
            event=LOGOUT,
            session="session",
        ),
    ),
    examples=(
        Example(
            C + "pop3-login: Login: user=<alice>, method=PLAIN, rip=127.0.0.5, "
            "lip=127.0.0.1, mpid=26052, session=<BfLevjthna1/AAAF>",
            "127.0.0.5",
            "login",
        ),
        Example(
            C + "imap-login: Login: user=<alice>, method=PLAIN, rip=::1, lip=::1, mpid=26077, "
            "secured, session=<NOzgvjth64EAAAAAAAAAAAAAAAAAAAAB>",
            "::1",
            "login",
        ),
        Example(
            T + "imap-login: Login: user=<bob@example.org>, method=PLAIN, rip=127.0.0.6, "
            "lip=127.0.0.1, mpid=26086, session=<qzLhvjth84t/AAAG>",
            "127.0.0.6",
            "login",
        ),
        Example(
            OWN + "imap-login: Info: Login: user=<alice>, method=PLAIN, rip=::1, lip=::1, "
            "mpid=28470, secured, session=<9PTRvzthK8QAAAAAAAAAAAAAAAAAAAAB>",
            "::1",
            "login",
            note="Dovecot's own log_path",
        ),
        Example(
            "Nov 27 04:48:09 mail dovecot: imap-login: Login: user=<carol>, method=PLAIN, "
            "rip=::ffff:192.0.2.7, lip=::ffff:192.0.2.1, mpid=7, TLS, session=<q2e0sYNLu5/AAAF>",
            "192.0.2.7",
            "login",
            note="IPv4-mapped address, TLS (2.4 renders the same fields; derived)",
        ),
        Example(
            C + "pop3-login: Login: user=<x rip=6.6.6.6>, method=PLAIN, rip=127.0.0.6, "
            "lip=127.0.0.1, mpid=26526, session=<sIgBvzthpeF/AAAG>",
            "127.0.0.6",
            "login",
            note="captured: successful login of a user named 'x rip=6.6.6.6'",
        ),
        Example(
            C + "imap-login: Login: user=<a>, method=plain, rip=6.6.6.6, lip=1.1.1.1, mpid=1, "
            "session=<a>>, method=PLAIN, rip=::1, lip=::1, mpid=26630, secured, "
            "session=<A/IJvzthIYIAAAAAAAAAAAAAAAAAAAAB>",
            "::1",
            "login",
            note="captured: a user name shaped like a whole login tail",
        ),
        Example(
            C + 'pop3-login: Login: user=<q"u,o"te>, method=PLAIN, rip=127.0.0.6, '
            "lip=127.0.0.1, mpid=26712, session=<JMsQvzth7dF/AAAG>",
            "127.0.0.6",
            "login",
            note="captured: quotes and a comma in the user name",
        ),
        Example(
            C + "pop3(alice)<26052><BfLevjthna1/AAAF>: Disconnected: Logged out top=0/0, "
            "retr=0/0, del=0/0, size=0",
            None,
            "logout",
            event=LOGOUT,
        ),
        Example(
            OWN + "imap(a>, method=plain, rip=6.6.6.6, lip=1.1.1.1, mpid=1, session=<a>)<28820>"
            "<1qb6vzthr4oAAAAAAAAAAAAAAAAAAAAB>: Info: Disconnected: Logged out in=12 out=477 "
            "deleted=0 expunged=0 trashed=0 hdr_count=0 hdr_bytes=0 body_count=0 body_bytes=0",
            None,
            "logout",
            event=LOGOUT,
            note="captured, own log; hostile user name",
        ),
        Example(
            C + "imap(alice)<27457><YjE3vzthT94AAAAAAAAAAAAAAAAAAAAB>: Disconnected: Connection "
            "closed (No commands sent) in=0 out=409 deleted=0 expunged=0 trashed=0 hdr_count=0 "
            "hdr_bytes=0 body_count=0 body_bytes=0",
            None,
            "logout",
            event=LOGOUT,
        ),
        Example(
            C + "pop3-login: Disconnected: Aborted login by logging out (auth failed, 1 attempts "
            "in 1 secs): user=<alice>, method=PLAIN, rip=127.0.0.7, lip=127.0.0.1, "
            "session=<e9LivjthMcl/AAAH>",
            None,
            note="captured: failed login",
        ),
        Example(
            C + "imap-login: Disconnected: Aborted login by logging out (auth failed, 1 attempts "
            "in 0 secs): user=<a>, method=plain, rip=6.6.6.6, lip=1.1.1.1, mpid=1, session=<a>>, "
            "method=PLAIN, rip=127.0.0.7, lip=127.0.0.1, session=<5SsKvzthpdR/AAAH>",
            None,
            note="captured: failed login whose user name forges a login tail",
        ),
        Example(
            C + "imap-login: Disconnected: Aborted login by logging out (auth failed, 1 attempts "
            "in 1 secs): user=<nl?Login: user=<evil>, method=PLAIN, rip=6.6.6.6, lip=1.1.1.1, "
            "mpid=1, sessio...>, method=PLAIN, rip=127.0.0.7, lip=127.0.0.1, "
            "session=<FvW2vzthb+l/AAAH>",
            None,
            note="captured: newline in the user name, truncated by Dovecot",
        ),
        Example(
            C + "auth: passwd-file(alice,127.0.0.7,<tqXqvjthd5F/AAAH>): Password mismatch",
            None,
            note="captured: auth process",
        ),
        Example(
            C + "imap-login: Disconnected: Connection closed (no auth attempts in 0 secs): "
            "user=<>, rip=127.0.0.8, lip=127.0.0.1, session=<6mE3vzth78N/AAAI>",
            None,
            note="captured: no login at all",
        ),
        Example(
            "Nov 27 04:48:13 mail dovecot: imap-login: Login: user=<eve>, method=PLAIN, "
            "rip=6.6.6.6, lip=127.0.0.1",
            None,
            note="forgery without mpid= and session=",
        ),
        Example(
            "Nov 27 04:48:14 mail eve: imap-login: Login: user=<eve>, method=PLAIN, "
            "rip=6.6.6.6, lip=127.0.0.1, mpid=1, session=<aaaa>",
            None,
            note="right message from a program that is not dovecot",
        ),
        Example(
            "Nov 27 04:48:15 mail dovecot: imap-login: Login: user=<eve>, method=PLAIN, "
            "rip=6.6.6.6, lip=127.0.0.1, mpid=1, session=<aaaa> x",
            None,
            note="trailing text after the session field",
        ),
    ),
)
