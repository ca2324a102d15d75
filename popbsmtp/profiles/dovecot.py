"""Dovecot 2.x POP3/IMAP logins as written to syslog under the tag ``dovecot``.

The login process writes ``imap-login: Login: user=<…>, method=…, rip=…,
lip=…, mpid=…[, TLS|, secured], session=<…>``; the user name sits inside
``<…>`` and everything after it is server-written with fixed character
classes, so the rule anchors on that tail and a name containing
``rip=6.6.6.6`` authorizes nothing.  Genuine 2.x lines always carry
``mpid=`` and ``session=<…>``; the rule requires both (a cheap check against
naive forgeries).  Example lines were captured from Dovecot 2.3.19 (Debian 12)
with the IPs kept on loopback.
"""

from popbsmtp.profiles import LOGIN, Example, Profile, Rule

_LOGIN_TAIL = (
    r", method=[A-Za-z0-9_-]{1,32}, rip={ip}, lip=[0-9A-Fa-f:.]{2,45}, mpid=[0-9]{1,10}"
    r"(?:, (?:TLS|secured|TLS handshaking))?, session=<(?P<session>[A-Za-z0-9+/]{1,64})>"
)

PROFILE = Profile(
    name="dovecot",
    description="Dovecot 2.x pop3-login/imap-login via syslog",
    rules=(
        Rule(
            name="login",
            programs=("dovecot",),
            pattern=r"(?:pop3|imap)-login: Login: user=<{user}>" + _LOGIN_TAIL,
            needle="-login: Login: ",
            event=LOGIN,
        ),
    ),
    examples=(
        Example(
            "Nov 27 04:48:08 mail dovecot: pop3-login: Login: user=<alice>, method=PLAIN, "
            "rip=127.0.0.5, lip=127.0.0.1, mpid=4242, secured, session=<RZ1e0sYNLu5/AAAF>",
            "127.0.0.5",
            "login",
        ),
        Example(
            "2026-11-27T04:48:08.123456+00:00 mail dovecot: imap-login: Login: user=<bob>, "
            "method=PLAIN, rip=::1, lip=::1, mpid=4243, TLS, session=<ABCDEFGHIJKLMNOP>",
            "::1",
            "login",
        ),
        Example(
            "Nov 27 04:48:09 mail dovecot: imap-login: Login: user=<carol>, method=PLAIN, "
            "rip=::ffff:192.0.2.7, lip=::ffff:192.0.2.1, mpid=7, session=<q2e0sYNLu5/AAAF>",
            "192.0.2.7",
            "login",
        ),
        Example(
            "Nov 27 04:48:10 mail dovecot: imap-login: Login: user=<x>, method=PLAIN, "
            "rip=6.6.6.6, lip=1.1.1.1, mpid=1, session=<aaaa>>, method=PLAIN, rip=127.0.0.9, "
            "lip=127.0.0.1, mpid=99, secured, session=<RZ1e0sYNLu5/AAAF>",
            "127.0.0.9",
            "login",
            note="user name shaped like a login tail: only the server-written tail counts",
        ),
        Example(
            "Nov 27 04:48:11 mail dovecot: imap-login: Disconnected (auth failed, 1 attempts "
            "in 2 secs): user=<alice>, method=PLAIN, rip=127.0.0.6, lip=127.0.0.1, "
            "session=<RZ1e0sYNLu5/AAAG>",
            None,
            note="failed login",
        ),
        Example(
            "Nov 27 04:48:12 mail dovecot: pop3-login: Aborted login (auth failed, 1 attempts "
            "in 2 secs): user=<rip=6.6.6.6>, method=PLAIN, rip=127.0.0.6, lip=127.0.0.1, "
            "session=<RZ1e0sYNLu5/AAAH>",
            None,
            note="failed login with an address in the user name",
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
    ),
)
