"""Cyrus IMAP (imapd, pop3d; 2.4 and later): logins, and logouts by pid.

Cyrus writes ``login: <clienthost> <user> <mech>[+TLS] User logged in
SESSIONID=<…>`` where ``<clienthost>`` is ``[addr]`` or ``name [addr]``: the
address comes *before* the user name, in a field the server writes, and the
rule takes the first bracket after an optional reverse name made of host
name characters only (no blank, no bracket), so nothing in the user name can
move it.  ``badlogin:`` lines (failures) never match: the rule is anchored at
``login:``.  Genuine lines always carry a syslog pid and ``SESSIONID=<…>``
(Cyrus 2.4+); both are required.

Sessions: Cyrus processes are reused for consecutive connections, so the
pid is the link: the ``USAGE <user> user: … sys: …`` line a process writes
when its client's session ends closes the session opened by that process's
last login, and a new login on the same pid closes the previous one.  When the
server stops, a process with a client logs ``graceful shutdown``, not
``USAGE``; before that, the master logs ``attempting clean shutdown on
signal``.  That line, the master's last (``All children have exited, closing
down``) and the start-up ``ctl_cyrusdb[pid]: recovering cyrus databases``
(Debian's START entry, also after a crash) are ``server`` events: every open
session ends there.

A client whose password was right gets ``User logged in`` even when Cyrus then
refuses the session (``-ERR [SYS/TEMP] Unable to open maildrop``): it is
granted.  What relaying depends on is that the client proved a password, and
it did; the refused session ends at the process's next ``USAGE``, login or
shutdown, or at ``max_session``.

Examples marked "captured" come from a real Cyrus IMAP 3.6.1 (Debian 12's
packages, unpacked rather than installed because they conflict with
Dovecot's) or 3.10.2 (Debian 13's, in a trixie tree); see
``tests/integration/cyrus_server.py`` and ``tests/profiles/data/cyrus-*.log``.
3.10 writes its logins as 3.6 did.  The others (reverse names,
mechanisms other than plaintext) follow Cyrus's source (``imap/imapd.c``,
``imap/pop3d.c``) and published logs.
"""

from popbsmtp.profiles import LOGIN, LOGOUT, SERVER, Example, JournalTrust, Profile, Rule

# Journal entries that may speak for Cyrus: imapd, pop3d and ctl_cyrusdb (its
# start-up recovery) log themselves (syslog(3)) as the cyrus user, the master
# as root.  Debian's /usr/sbin/cyrmaster is a symlink to /usr/lib/cyrus/bin/master
# (command name "cyrmaster" or "master", executable the latter); Fedora and RHEL
# run cyrus-master.  The unit is cyrus-imapd.service on both.
JOURNAL = JournalTrust(
    users=("root", "cyrus"),
    comms=("imapd", "pop3d", "ctl_cyrusdb", "cyrmaster", "master", "cyrus-master"),
    exes=(
        "/usr/lib/cyrus/bin/imapd", "/usr/lib/cyrus/bin/pop3d", "/usr/lib/cyrus/bin/master",
        "/usr/lib/cyrus/bin/ctl_cyrusdb", "/usr/libexec/cyrus-imapd/ctl_cyrusdb",
        "/usr/libexec/cyrus-imapd/imapd", "/usr/libexec/cyrus-imapd/pop3d",
        "/usr/libexec/cyrus-imapd/cyrus-master",
    ),
    units=("cyrus-imapd.service",),
)  # fmt: skip

# Cyrus tags its lines with the *service name* from cyrus.conf (Debian prefixes
# "cyrus/"): the usual names and their IPv6 twins.  Renamed services need a
# profile of their own (copy this one with other programs).
_SERVICES = ("imap", "imaps", "pop3", "pop3s", "imap4", "imap6", "imaps6", "pop36", "pop3s6")
_PROGRAMS = tuple(
    prefix + name for prefix in ("", "cyrus/") for name in (*_SERVICES, "imapd", "pop3d")
)
_SECONDS = r"[0-9]{1,10}\.[0-9]{1,9}"
P = "Nov 27 04:48:08 mail "
C10 = "2026-12-05T02:10:51.890443+00:00 vm "  # captured 3.10.2, rsyslog RFC 3339

PROFILE = Profile(
    name="cyrus",
    journal=JOURNAL,
    description="Cyrus IMAP 2.4+ (3.6, 3.10 captured) imapd/pop3d; logouts by process id",
    rules=(
        Rule(
            name="login",
            programs=_PROGRAMS,
            pattern=r"login: (?:{host} )?\[{ip}\] {user} [A-Za-z0-9_+-]{1,64} User logged in "
            r"SESSIONID=<[A-Za-z0-9._-]{1,128}>",
            needle="User logged in",
            event=LOGIN,
            session="pid",
            pid=True,
        ),
        Rule(
            name="logout",
            programs=_PROGRAMS,
            pattern=r"USAGE {user} user: " + _SECONDS + " sys: " + _SECONDS,
            needle="USAGE ",
            event=LOGOUT,
            session="pid",
            pid=True,
        ),
        Rule(
            name="stop",
            programs=("master", "cyrus/master"),
            pattern=r"attempting clean shutdown on signal|All children have exited, closing down",
            needle="master",
            event=SERVER,
            pid=True,
        ),
        Rule(
            name="start",
            programs=("ctl_cyrusdb", "cyrus/ctl_cyrusdb"),
            pattern=r"recovering cyrus databases",
            needle="ctl_cyrusdb",
            event=SERVER,
            pid=True,
        ),
    ),
    examples=(
        Example(
            "2026-11-27T06:10:34.151655+00:00 vm cyrus/imap[26776]: login: [127.0.0.5] alice "
            "plaintext User logged in SESSIONID=<mail-1795759834-26776-2-8431311167565322668>",
            "127.0.0.5",
            "login",
            note="captured",
        ),
        Example(
            "2026-11-27T06:10:34.340791+00:00 vm cyrus/imap6[26777]: login: [::1] bob plaintext "
            "User logged in SESSIONID=<mail-1795759834-26777-2-7871957168391051952>",
            "::1",
            "login",
            note="captured; IPv6 service",
        ),
        Example(
            "2026-11-27T06:10:34.344422+00:00 vm cyrus/pop3[26831]: login: [127.0.0.8] "
            "x [6.6.6.6] y plaintext User logged in "
            "SESSIONID=<mail-1795759834-26831-2-10828031539618296748>",
            "127.0.0.8",
            "login",
            note="captured: successful login of a user named 'x [6.6.6.6] y'",
        ),
        Example(
            '2026-11-27T06:10:34.403703+00:00 vm cyrus/imap[26806]: login: [127.0.0.8] q"u,o"te '
            "plaintext User logged in SESSIONID=<mail-1795759834-26806-1-10686668633332559249>",
            "127.0.0.8",
            "login",
            note="captured",
        ),
        Example(
            "2026-11-27T06:10:34.397164+00:00 vm cyrus/pop3[26831]: USAGE x [6.6.6.6] y user: "
            "0.002698 sys: 0.005303",
            None,
            "logout",
            event=LOGOUT,
            note="captured",
        ),
        Example(
            "2026-12-05T02:10:51.778963+00:00 vm cyrus/pop36[23801]: login: localhost [::1] "
            "alice plaintext User logged in "
            "SESSIONID=<mail-1796436651-23801-1-3829253379067032019>",
            "::1",
            "login",
            note="captured 3.10: reverse name from /etc/hosts",
        ),
        Example(
            C10 + "cyrus/imap[23792]: graceful shutdown",
            None,
            note="captured 3.10: a process stops; the master's line before it ended its session",
        ),
        Example(
            C10 + "master[23764]: attempting clean shutdown on signal",
            None,
            "stop",
            event=SERVER,
            note="captured 3.10 (3.6 writes the same)",
        ),
        Example(
            "2026-12-05T02:10:51.901622+00:00 vm master[23764]: All children have exited, "
            "closing down",
            None,
            "stop",
            event=SERVER,
            note="captured 3.10: the master's last line",
        ),
        Example(
            "2026-12-05T02:10:51.541695+00:00 vm cyrus/ctl_cyrusdb[23783]: recovering cyrus "
            "databases",
            None,
            "start",
            event=SERVER,
            note="captured 3.10: START's recovery, before any service listens",
        ),
        Example(
            "2026-12-05T02:10:51.565877+00:00 vm cyrus/ctl_cyrusdb[23783]: done recovering cyrus "
            "databases",
            None,
            note="captured 3.10: the same start-up, counted once",
        ),
        Example(
            "Dec  5 02:04:47 vm cyrus/imap[9044]: session ended: "
            "sessionid=<mail-1796436287-9044-1-14166306205567879295> userid=<alice> "
            "id.name=<(null)> ",
            None,
            note="captured 3.10: after USAGE, which already ended the session",
        ),
        Example(
            P + "master: attempting clean shutdown on signal",
            None,
            note="forged: the master always logs its pid",
        ),
        Example(
            "2026-11-27T06:10:34.420823+00:00 vm cyrus/imap[26776]: badlogin: [127.0.0.7] "
            "plaintext (alice) [SASL(-13): authentication failure: checkpass failed]",
            None,
            note="captured: failed login",
        ),
        Example(
            "2026-11-27T06:10:43.489274+00:00 vm cyrus/pop3[26831]: badlogin: [127.0.0.7] "
            "plaintext (login: [6.6.6.6] y plaintext User logged in) invalid user",
            None,
            note="captured: failed login whose name forges a login line",
        ),
        Example(
            "2026-11-27T06:10:34.333795+00:00 vm cyrus/pop3[26831]: autocreateinbox: User bob, "
            "INBOX was successfully created",
            None,
            note="captured: not a login line",
        ),
        Example(
            P + "cyrus/imap[4711]: login: client.example.com [192.0.2.3] alice plaintext+TLS "
            "User logged in SESSIONID=<cyrus-4711-1795754888-1-6546234872349234>",
            "192.0.2.3",
            "login",
        ),
        Example(
            P + "imap[4712]: login: [::1] bob PLAIN User logged in "
            "SESSIONID=<mail.example.com-4712-1795754888-1-123>",
            "::1",
            "login",
        ),
        Example(
            P + "pop3s[4713]: login: localhost [::ffff:192.0.2.8] carol@example.org "
            "DIGEST-MD5 User logged in SESSIONID=<cyrus-4713-1795754888-1-42>",
            "192.0.2.8",
            "login",
        ),
        Example(
            P + "imap[4714]: login: [192.0.2.9] x [6.6.6.6] y plaintext User logged in "
            "SESSIONID=<cyrus-4714-1-1-1>",
            "192.0.2.9",
            "login",
            note="bracketed address in the user name: the server's first field counts",
        ),
        Example(
            P + "cyrus/imap[4711]: USAGE alice user: 0.012000 sys: 0.008000",
            None,
            "logout",
            event=LOGOUT,
        ),
        Example(
            P + "imap[4715]: badlogin: client.example.com [192.0.2.3] plaintext alice "
            "SASL(-13): authentication failure: checkpass failed",
            None,
            note="failed login",
        ),
        Example(
            P + "imap[4715]: badlogin: [192.0.2.3] plaintext x login: [6.6.6.6] y plaintext "
            "User logged in SESSIONID=<a> SASL(-13): authentication failure",
            None,
            note="failed login whose name forges a login line",
        ),
        Example(
            P + "imap[4716]: login: client.example.com [192.0.2.3] alice plaintext User logged in",
            None,
            note="no SESSIONID: older than 2.4 or forged",
        ),
        Example(
            P + "imap: login: [6.6.6.6] eve plaintext User logged in SESSIONID=<a>",
            None,
            note="forged: no pid",
        ),
        Example(
            P + "imap[4717]: login: evil name [6.6.6.6] eve plaintext User logged in SESSIONID=<a>",
            None,
            note="a blank cannot be part of the reverse name",
        ),
    ),
)
