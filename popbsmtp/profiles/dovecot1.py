"""Dovecot 1.x and 2.0 logins (no ``session=<…>`` yet); never part of ``auto``.

Dovecot 1.1 to 2.0 log ``imap-login: Login: user=<…>, method=…, rip=…,
lip=…[, mpid=…][, TLS|, secured]`` (``mpid=`` arrived in 1.2/2.0, the
session id in 2.1); Dovecot 1.0 logged ``imap-login: Login: alice
[192.0.2.3]``.  Because these shapes lack the 2.1+ fields, a forged line is
easier to pass off as genuine, so this profile is only used when the
administrator names it (``profiles = dovecot1``).  The address is still
taken only from the last, server-written field.  Dovecot 1.x/2.0 are not
packaged any more; the examples are derived from their documented default
``login_log_format_elements`` (``user=<%u> method=%m rip=%r lip=%l [mpid=%e]
%c``), not captured.  No logout tracking: 1.x mail processes log no session
id to tie a logout to its login.
"""

from popbsmtp.profiles import LOGIN, Example, Profile, Rule

PROFILE = Profile(
    name="dovecot1",
    description="Dovecot 1.x and 2.0 (no session ids; weaker shape check, never in auto)",
    rules=(
        Rule(
            name="login",
            programs=("dovecot",),
            pattern=r"(?:pop3|imap)-login: (?:Info: )?Login: user=<{user}>, "
            r"method=[A-Za-z0-9_-]{1,32}, rip={ip}, lip=[0-9A-Fa-f:.]{2,45}"
            r"(?:, mpid=[0-9]{1,10})?(?:, (?:TLS|secured))?",
            needle="log",
            event=LOGIN,
        ),
        Rule(
            name="login-1.0",
            programs=("dovecot",),
            pattern=r"(?:pop3|imap)-login: (?:Info: )?Login: {user} \[{ip}\]",
            needle="log",
            event=LOGIN,
        ),
    ),
    examples=(
        Example(
            "Nov 27 04:48:08 mail dovecot: imap-login: Login: user=<alice>, method=PLAIN, "
            "rip=::ffff:192.0.2.3, lip=::ffff:192.0.2.1, TLS",
            "192.0.2.3",
            "login",
        ),
        Example(
            "Nov 27 04:48:08 mail dovecot: pop3-login: Login: user=<bob>, method=PLAIN, "
            "rip=2001:db8::7, lip=2001:db8::1, mpid=1234, secured",
            "2001:db8::7",
            "login",
            note="2.0 with mpid=",
        ),
        Example(
            "dovecot: Nov 27 04:48:08 Info: imap-login: Login: user=<carol>, method=PLAIN, "
            "rip=192.0.2.9, lip=192.0.2.1",
            "192.0.2.9",
            "login",
            note="1.x own log_path",
        ),
        Example(
            "Nov 27 04:48:08 mail dovecot: imap-login: Login: dave [192.0.2.10]",
            "192.0.2.10",
            "login-1.0",
        ),
        Example(
            "Nov 27 04:48:08 mail dovecot: imap-login: Login: user=<x>, method=PLAIN, "
            "rip=6.6.6.6, lip=1.1.1.1>, method=PLAIN, rip=192.0.2.4, lip=192.0.2.1, TLS",
            "192.0.2.4",
            "login",
            note="user name carrying a login tail: the last one counts",
        ),
        Example(
            "Nov 27 04:48:08 mail dovecot: imap-login: Login: x [6.6.6.6] [192.0.2.11]",
            "192.0.2.11",
            "login-1.0",
            note="1.0: bracketed address in the user name",
        ),
        Example(
            "Nov 27 04:48:08 mail dovecot: imap-login: Aborted login (auth failed, 1 attempts): "
            "user=<alice>, method=PLAIN, rip=192.0.2.3, lip=192.0.2.1",
            None,
            note="failed login",
        ),
        Example(
            "Nov 27 04:48:08 mail dovecot: imap-login: Disconnected: user=<alice>, "
            "method=PLAIN, rip=192.0.2.3, lip=192.0.2.1",
            None,
            note="disconnect before login",
        ),
        Example(
            "Nov 27 04:48:08 mail dovecot: imap-login: Login: user=<x>, method=PLAIN, "
            "rip=6.6.6.6, lip=1.1.1.1, TLS x",
            None,
            note="trailing text after the last field",
        ),
    ),
    auto=False,
)
