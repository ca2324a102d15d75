"""UW ipop3d/imapd logins (``Login user=… host=name [a.b.c.d]``).

UW writes ``host=`` as the client's reverse name (if any) then the address
in brackets, after the user name, which is free text; the rule anchors on
that tail so a name containing ``host=x [6.6.6.6]`` authorizes nothing.
This is the Perl pop-before-smtp's default.  UW imap is no longer packaged
by Debian, so the examples follow its source (``ipop3d.c``/``imapd.c``
syslog calls) and the lines published in the Perl tool's documentation;
they are derived, not captured.

Sessions are tied by address: ``Logout``/``Autologout``/``Killed (…)``/
``Command stream end of file…`` lines carry ``user=… host=… [addr]``.
"""

from popbsmtp.profiles import LOGIN, LOGOUT, Example, Profile, Rule

_HOST = r" host=(?:[A-Za-z0-9._-]{1,255} )?\[{ip}\]"

PROFILE = Profile(
    name="uw",
    description="UW ipop3d/imapd (University of Washington IMAP toolkit)",
    rules=(
        Rule(
            name="pop3-login",
            programs=("ipop3d", "pop3d"),
            pattern=r"(?:Login|Auth|APOP) user={user}" + _HOST + r" nmsgs=[0-9]{1,10}/[0-9]{1,10}",
            needle=" host=",
            event=LOGIN,
            session="ip",
        ),
        Rule(
            name="imap-login",
            programs=("imapd", "imapsd"),
            pattern=r"(?:Login|Authenticated|Preauthenticated) user={user}" + _HOST,
            needle=" host=",
            event=LOGIN,
            session="ip",
        ),
        Rule(
            name="logout",
            programs=("ipop3d", "pop3d", "imapd", "imapsd"),
            pattern=r"(?:Logout|Autologout|Killed \([a-z ]{1,64}\)|Command stream end of file"
            r"(?:, while [a-z ]{1,64})?) user={user}"
            + _HOST
            + r"(?: nmsgs=[0-9]{1,10} ndele=[0-9]{1,10})?",
            needle=" host=",
            event=LOGOUT,
            session="ip",
        ),
    ),
    examples=(
        Example(
            "Nov 27 04:48:08 mail ipop3d[10744]: Login user=joe host=pc.example.com "
            "[192.0.2.3] nmsgs=0/0",
            "192.0.2.3",
            "pop3-login",
        ),
        Example(
            "Nov 27 04:48:09 mail imapd[1234]: Login user=bob host=[2001:db8::5]",
            "2001:db8::5",
            "imap-login",
        ),
        Example(
            "Nov 27 04:48:10 mail imapd[1235]: Authenticated user=bob host=cl.example.org "
            "[192.0.2.44]",
            "192.0.2.44",
            "imap-login",
        ),
        Example(
            "Nov 27 04:48:11 mail ipop3d[10745]: Login user=x host=evil [6.6.6.6] nmsgs=1/1 "
            "host=pc.example.com [192.0.2.9] nmsgs=3/3",
            "192.0.2.9",
            "pop3-login",
            note="user name carrying a host= tail: only the last, server-written one counts",
        ),
        Example(
            "Nov 27 04:48:12 mail ipop3d[10746]: Login failed user=joe auth=joe "
            "host=pc.example.com [192.0.2.3]",
            None,
            note="failed login",
        ),
        Example(
            "Nov 27 04:48:20 mail imapd[1234]: Logout user=bob host=[2001:db8::5]",
            "2001:db8::5",
            "logout",
            event=LOGOUT,
        ),
        Example(
            "Nov 27 04:48:21 mail ipop3d[10744]: Logout user=joe host=pc.example.com "
            "[192.0.2.3] nmsgs=0 ndele=0",
            "192.0.2.3",
            "logout",
            event=LOGOUT,
        ),
        Example(
            "Nov 27 04:48:22 mail imapd[1235]: Autologout user=bob host=cl.example.org "
            "[192.0.2.44]",
            "192.0.2.44",
            "logout",
            event=LOGOUT,
        ),
        Example(
            "Nov 27 04:48:23 mail imapd[1237]: Command stream end of file, while reading line "
            "user=bob host=[192.0.2.44]",
            "192.0.2.44",
            "logout",
            event=LOGOUT,
        ),
        Example(
            'Nov 27 04:48:24 mail imapd[1238]: Login user=a "b" <c>#012d,e host=[192.0.2.45]',
            "192.0.2.45",
            "imap-login",
            note="quotes, <>, #012 and a comma in the user name",
        ),
        Example(
            "Nov 27 04:48:25 mail imapd[1239]: Login failed user=x host=[6.6.6.6] "
            "auth=x host=[192.0.2.3]",
            None,
            note="failed login whose name forges a host field",
        ),
        Example(
            "Nov 27 04:48:13 mail imapd[1236]: Login user=x host=[6.6.6.6] extra",
            None,
            note="trailing text after the host field",
        ),
    ),
)
