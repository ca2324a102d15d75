"""Dovecot 2.1 and later (2.3, 2.4): POP3/IMAP logins and logouts.

Covers both ways Dovecot logs:

- syslog, tag ``dovecot``: ``imap-login: Login: user=<…>, method=…, rip=…,
  lip=…, mpid=…[, TLS|, secured], session=<…>`` up to 2.3, ``Logged in:``
  instead of ``Login:`` from 2.4.0 on (rules ``login`` and ``logged_in``);
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

2.4 fails a login with ``Login aborted: …`` (2.3: ``Disconnected: Aborted
login …``); no rule accepts either.  The master's start-up line
(``master: Dovecot v2.4.1-4 (…) starting up for …``) names the version: once
it is seen, a login in the other version's form is refused as suspect (see
:mod:`popbsmtp.parse.matcher`).  That line and the master's ``Killed with signal``
on shutdown are ``server`` events.

Examples were captured from Dovecot 2.3.19.1 (Debian 12) and 2.4.1 (Debian
13) by ``tests/integration/dovecot_server.py`` (real Dovecot, real rsyslog,
on loopback; see ``tests/profiles/data/``).
"""

from popbsmtp.profiles import LOGIN, LOGOUT, SERVER, Example, JournalTrust, Profile, Rule

# Journal entries that may speak for Dovecot: its "log" process writes every
# line of the login and mail processes, the master ("dovecot") its own, both
# as root; Debian packages them in /usr/lib/dovecot and /usr/sbin, Fedora and
# RHEL in /usr/libexec/dovecot and /usr/sbin; the unit is dovecot.service.
JOURNAL = JournalTrust(
    users=("root",),
    comms=("log", "dovecot"),
    exes=("/usr/lib/dovecot/log", "/usr/libexec/dovecot/log", "/usr/sbin/dovecot"),
    units=("dovecot.service",),
)

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
C4 = "2026-12-05T02:02:39.143830+00:00 mail dovecot: "  # captured 2.4.1, rsyslog RFC 3339
T4 = "Dec  5 02:02:39 mail dovecot: "  # captured 2.4.1, rsyslog traditional
OWN4 = "Dec 05 02:02:40 "  # captured 2.4.1, Dovecot's own log_path

PROFILE = Profile(
    name="dovecot",
    journal=JOURNAL,
    description="Dovecot 2.1+ (2.3, 2.4) pop3/imap via syslog or its own log_path; logouts",
    forms=("2.3", "2.4"),
    rules=(
        Rule(
            name="login",
            programs=("dovecot",),
            pattern=SERVICES + r"-login: (?:Info: )?Login: user=<{user}>" + _LOGIN_TAIL,
            needle="Login: user=<",
            event=LOGIN,
            session="session",
            form="2.3",
        ),
        Rule(
            name="logged_in",
            programs=("dovecot",),
            pattern=SERVICES + r"-login: (?:Info: )?Logged in: user=<{user}>" + _LOGIN_TAIL,
            needle="Logged in: user=<",
            event=LOGIN,
            session="session",
            form="2.4",
        ),
        Rule(
            name="start",
            programs=("dovecot",),
            pattern=r"master: (?:Info: )?Dovecot v(?P<version>[0-9]{1,4}\.[0-9]{1,4})"
            r"[0-9A-Za-z.~+-]{0,40} \([0-9a-f]{1,40}\) starting up for [a-z0-9, ]{0,200}"
            r"(?: \(core dumps (?:disabled|enabled)\))?",
            needle="master: ",
            also=(") starting up for ",),
            event=SERVER,
        ),
        Rule(
            name="stop",
            programs=("dovecot",),
            pattern=r"master: Warning: Killed with signal [0-9]{1,3} "
            r"\(by pid=[0-9]{1,10} uid=[0-9]{1,10} code=[a-z_]{1,16}\)",
            needle="Killed with signal ",
            also=("master: ",),
            event=SERVER,
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
            note="IPv4-mapped address, TLS (derived)",
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
            C4 + "pop3-login: Logged in: user=<alice>, method=PLAIN, rip=127.0.0.5, "
            "lip=127.0.0.1, mpid=22113, session=<D3EgY9lh191/AAAF>",
            "127.0.0.5",
            "logged_in",
            note="captured 2.4",
        ),
        Example(
            T4 + "pop3-login: Logged in: user=<alice>, method=PLAIN, rip=127.0.0.10, "
            "lip=127.0.0.1, mpid=22131, TLS, session=<j3cjY9lh6eh/AAAK>",
            "127.0.0.10",
            "logged_in",
            note="captured 2.4: STARTTLS",
        ),
        Example(
            C4 + "pop3-login: Logged in: user=<alice>, method=APOP, rip=127.0.0.11, "
            "lip=127.0.0.1, mpid=22135, session=<0swkY9lhLbF/AAAL>",
            "127.0.0.11",
            "logged_in",
            note="captured 2.4: APOP",
        ),
        Example(
            C4 + "imap-login: Logged in: user=<bob@example.org>, method=CRAM-MD5, "
            "rip=127.0.0.11, lip=127.0.0.1, mpid=22137, session=<eQklY9lhAZZ/AAAL>",
            "127.0.0.11",
            "logged_in",
            note="captured 2.4: CRAM-MD5",
        ),
        Example(
            C4 + "imap-login: Logged in: user=<alice>, method=PLAIN, rip=::1, lip=::1, "
            "mpid=22119, secured, session=<ZC8hY9lhzbMAAAAAAAAAAAAAAAAAAAAB>",
            "::1",
            "logged_in",
            note="captured 2.4: IPv6",
        ),
        Example(
            OWN4 + "pop3-login: Info: Logged in: user=<a>, method=plain, rip=6.6.6.6, "
            "lip=1.1.1.1, mpid=1, session=<a>>, method=PLAIN, rip=127.0.0.6, lip=127.0.0.1, "
            "mpid=22382, session=<EOo7Y9lhyc5/AAAG>",
            "127.0.0.6",
            "logged_in",
            note="captured 2.4, own log: a user name shaped like a whole login tail",
        ),
        Example(
            T4 + "master: Dovecot v2.4.1-4 (7d8c0e5759) starting up for pop3, imap "
            "(core dumps disabled)",
            None,
            "start",
            event=SERVER,
            note="captured 2.4: the master starts; names the version",
        ),
        Example(
            OWN + "master: Info: Dovecot v2.3.19.1 (9b53102964) starting up for pop3, imap "
            "(core dumps disabled)",
            None,
            "start",
            event=SERVER,
            note="captured 2.3, own log",
        ),
        Example(
            T4 + "master: Warning: Killed with signal 15 (by pid=22027 uid=0 code=kill)",
            None,
            "stop",
            event=SERVER,
            note="captured 2.4 (2.3 writes the same): the master stops on SIGTERM",
        ),
        Example(
            C4 + "imap-login: Login aborted: Logged out (auth failed, 1 attempts in 0 secs) "
            "(auth_failed): user=<alice>, method=CRAM-MD5, rip=127.0.0.7, lip=127.0.0.1, "
            "session=<QwEmY9lhu7B/AAAH>",
            None,
            note="captured 2.4: failed login",
        ),
        Example(
            OWN4 + "imap-login: Info: Login aborted: Connection closed (no auth attempts in 0 "
            "secs) (no_auth_attempts): user=<>, rip=127.0.0.8, lip=127.0.0.1, "
            "session=<6d0/Y9lhDYR/AAAI>",
            None,
            note="captured 2.4, own log: no login at all",
        ),
        Example(
            C4 + "pop3-login: Login aborted: Logged out (auth failed, 1 attempts in 0 secs) "
            "(auth_failed): user=<a>, method=PLAIN, rip=6.6.6.6, lip=1.1.1.1, mpid=1, "
            "session=<a>>, method=PLAIN, rip=127.0.0.6, lip=127.0.0.1, "
            "session=<UaYuY9lhjaF/AAAG>",
            None,
            note="captured 2.4: failed login whose user name forges a login tail",
        ),
        Example(
            C4 + "auth(alice,127.0.0.7,sasl:cram-md5)<QwEmY9lhu7B/AAAH>: cram-md5: "
            "Password mismatch",
            None,
            note="captured 2.4: auth process",
        ),
        Example(
            C4 + "pop3-login: Login aborted: Logged out (auth failed, 1 attempts in 0 secs) "
            "(auth_failed): user=<x>, method=PLAIN, rip=6.6.6.6, lip=1.1.1.1, mpid=1, "
            "session=<a>",
            None,
            note="a failure shaped like a login tail to its end",
        ),
        Example(
            T4 + "imap-login: Logged in: user=<eve>, method=PLAIN, rip=6.6.6.6, lip=127.0.0.1",
            None,
            note="2.4 forgery without mpid= and session=",
        ),
        Example(
            T4 + "master: Dovecot v2.4.1-4 (7d8c0e5759) starting up for pop3, imap "
            "(core dumps disabled) rip=6.6.6.6",
            None,
            note="trailing text after a start-up line",
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
