"""cucipop (Cubic Circle's POP3): the end-of-session statistics line.

cucipop logs ``alice 192.0.2.3 2, 0 (0), 1 (512)`` (user, client address,
then message and byte counters) when a logged-in session ends; it is the
only line that proves a login, so it is treated as one.  The address is
followed only by server-written counters, so the rule anchors on that tail.

cucipop has not been maintained since the late 1990s and is not packaged;
the examples are derived from the format published with the Perl
pop-before-smtp, not captured.
"""

from popbsmtp.profiles import LOGIN, Example, Profile, Rule

_N = r"[0-9]{1,10}"
P = "Nov 27 04:48:08 mail cucipop"

PROFILE = Profile(
    name="cucipop",
    description="cucipop (end-of-session statistics line)",
    rules=(
        Rule(
            name="session",
            programs=("cucipop",),
            pattern=r"{user} {ip} "
            + _N
            + ", "
            + _N
            + r" \("
            + _N
            + r"\), "
            + _N
            + r" \("
            + _N
            + r"\)",
            needle="pop",
            event=LOGIN,
            pid=True,
        ),
    ),
    examples=(
        Example(P + "[411]: alice 192.0.2.3 2, 0 (0), 1 (512)", "192.0.2.3", "session"),
        Example(
            P + "[412]: x 6.6.6.6 1, 1 (1), 1 (1) 192.0.2.4 0, 0 (0), 0 (0)",
            "192.0.2.4",
            "session",
            note="user name carrying a whole tail",
        ),
        Example(
            P + "[413]: Invalid password for alice from 192.0.2.3", None, note="failed login"
        ),  # fmt: skip
        Example(P + "[414]: alice 192.0.2.3 2, 0 (0), 1 (512) x", None, note="trailing text"),
        Example(
            "Nov 27 04:48:08 mail cucipop: eve 6.6.6.6 0, 0 (0), 0 (0)",
            None,
            note="forged: no pid",
        ),
    ),
)
