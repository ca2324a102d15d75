"""Teapop: ``Successful login for alice@example.org [192.0.2.3]``.

The bracketed address is the last field, after the user name; the rule is
anchored at the end of the line.  Teapop is long unmaintained and not
packaged by Debian; the examples are derived from its source
(``teapop/pop_auth.c``) and the format published with the Perl
pop-before-smtp, not captured.
"""

from popbsmtp.profiles import LOGIN, Example, Profile, Rule

P = "Nov 27 04:48:08 mail teapop"

PROFILE = Profile(
    name="teapop",
    description="Teapop (Successful login for … [addr])",
    rules=(
        Rule(
            name="login",
            programs=("teapop",),
            pattern=r"Successful login for {user} \[{ip}\]",
            needle="login for",
            also=("pop",),
            event=LOGIN,
            pid=True,
        ),
    ),
    examples=(
        Example(
            P + "[511]: Successful login for alice@example.org [192.0.2.3]", "192.0.2.3", "login"
        ),  # fmt: skip
        Example(P + "[512]: Successful login for bob [2001:db8::8]", "2001:db8::8", "login"),
        Example(
            P + "[513]: Successful login for x [6.6.6.6] [192.0.2.9]",
            "192.0.2.9",
            "login",
            note="bracketed address in the user name",
        ),
        Example(P + "[514]: Failed login for alice [192.0.2.3]", None, note="failed login"),
        Example(
            P + "[515]: Failed login for Successful login for x [6.6.6.6]",
            None,
            note="failed login whose name forges a success",
        ),
        Example(
            "Nov 27 04:48:08 mail teapop: Successful login for eve [6.6.6.6]",
            None,
            note="forged: no pid",
        ),
    ),
)
