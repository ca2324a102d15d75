"""Qpopper (``popper``, ``qpopper``, ``in.qpopper``): syslog and its trace file.

Qpopper logs ``(v4.1.0) POP login by user "alice" at (host) 192.0.2.3``
after a successful login and, with statistics on, ``Stats: alice 2 3456 0 0
host 192.0.2.3`` when the session ends (which also proves a login).  In
both the address is the last field, written by the server after the user
name, and the rules are anchored at the end of the line.  The trace file
(``-t file``) has its own envelope, ``Wed Nov 27 04:48:08 2026 [pid] …``,
which :mod:`popbsmtp.parse.envelope` reports as program ``popper``.

Qpopper is not packaged by Debian any more; the examples are derived from
its source (``pop_pass.c``/``pop_quit.c`` log calls) and published logs,
not captured.
"""

from popbsmtp.profiles import LOGIN, Example, Profile, Rule

_PROGRAMS = ("popper", "qpopper", "in.qpopper")
_PEER = r"[A-Za-z0-9._:-]{1,255}"
_N = r"[0-9]{1,10}"
P = "Nov 27 04:48:08 mail "

PROFILE = Profile(
    name="qpopper",
    description="Qpopper via syslog or its trace file (login and Stats lines)",
    rules=(
        Rule(
            name="login",
            programs=_PROGRAMS,
            pattern=r'(?:\([A-Za-z0-9._ -]{1,64}\) )?POP login by user "{user}" at \('
            + _PEER
            + r"\) {ip}",
            needle="login by user",
            event=LOGIN,
        ),
        Rule(
            name="stats",
            programs=_PROGRAMS,
            pattern=r"Stats: {user} " + " ".join([_N] * 4) + r" (?:{host} )?{ip}",
            needle="Stats: ",
            event=LOGIN,
        ),
    ),
    examples=(
        Example(
            P + 'popper[3121]: (v4.1.0) POP login by user "alice" at (pc.example.com) 192.0.2.3',
            "192.0.2.3",
            "login",
        ),
        Example(
            P + "qpopper[3122]: Stats: alice 2 3456 0 0 pc.example.com 192.0.2.3",
            "192.0.2.3",
            "stats",
        ),
        Example(
            'Wed Nov 27 04:48:08 2026 [3123] (v4.1.0) POP login by user "bob" at '
            "(2001:db8::9) 2001:db8::9",
            "2001:db8::9",
            "login",
            note="qpopper trace file",
        ),
        Example(
            P + 'popper[3124]: (v4.1.0) POP login by user "x" at (h) 6.6.6.6" at (pc) 192.0.2.4',
            "192.0.2.4",
            "login",
            note="user name carrying a whole tail",
        ),
        Example(
            P + "popper[3125]: Stats: x 1 1 1 1 h 6.6.6.6 0 0 0 0 pc.example.com 192.0.2.5",
            "192.0.2.5",
            "stats",
            note="user name carrying a Stats tail",
        ),
        Example(
            P + "popper[3126]: [AUTH] Failed attempted login to alice from host (pc) 192.0.2.3",
            None,
            note="failed login",
        ),
        Example(
            P + 'popper[3127]: alice at pc (192.0.2.3): -ERR [AUTH] Password supplied for "alice"'
            " is incorrect.",
            None,
            note="failed login",
        ),
        Example(
            P + 'popper[3128]: (v4.1.0) POP login by user "x" at (pc) 192.0.2.3 #012 6.6.6.6',
            None,
            note="trailing text after the address",
        ),
    ),
)
