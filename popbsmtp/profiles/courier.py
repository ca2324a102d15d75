"""Courier-IMAP and Courier POP3 (``imapd``, ``pop3d`` and their ``-ssl`` twins).

Courier logs ``LOGIN, user=…, ip=[…], port=[…][, protocol=…]`` after a
successful login and ``LOGOUT``/``DISCONNECTED``/``TIMEOUT`` lines, which
carry the address too, when the session ends; failures are ``LOGIN FAILED``.
The user name is free text before ``, ip=[``; every rule anchors on the
server-written tail after it.  Courier's syslog tags never carry a pid
(``imapd:``, not ``imapd[123]:``), so a line with one is refused as forged.
That also means lines relayed through journald, which adds the pid, are not
recognised: Courier is not packaged for the RHEL family, where that happens.

Sessions are tied by address: each login opens one, each logout closes one.

Courier-IMAP 5.2 ends the LOGIN and LOGOUT lines of a STARTTLS session with
``, starttls=1`` (IMAP) or ``, stls=1`` (POP3), after the port and protocol:
the rules accept exactly these optional suffixes.  When the server stops, an
IMAP session with a client logs ``NOTICE: Disconnected during shutdown by
signal, user=…``; a POP3 session logs nothing, and Courier writes no start-up
or shutdown line of its own.  So that line is a ``server`` event: the server
is stopping, and every open session (POP3 ones too) ends there.

Examples marked "captured" come from a real Courier-IMAP 5.0.13 / Courier
POP3 1.0.16 (Debian 12's packages, unpacked rather than installed because
they conflict with Dovecot's) and Courier-IMAP 5.2.11 (Debian 13's, in a
trixie tree); see ``tests/integration/courier_server.py`` and
``tests/profiles/data/courier-*.log``: among them a successful login of a user
named ``x, ip=[6.6.6.6], port=[1]``.  The ``TIMEOUT`` and ``DISCONNECTED``
shapes follow Courier's source.
"""

from popbsmtp.profiles import LOGIN, LOGOUT, SERVER, Example, JournalTrust, Profile, Rule

# Journal entries that may speak for Courier: its servers write to stderr and
# courierlogger (run as root by the init scripts and units) turns that into
# syslog lines tagged imapd, pop3d …; Debian's units are below.
JOURNAL = JournalTrust(
    users=("root",),
    comms=("courierlogger",),
    exes=("/usr/sbin/courierlogger",),
    units=(
        "courier-imap.service", "courier-imap-ssl.service",
        "courier-pop.service", "courier-pop-ssl.service",
    ),
)  # fmt: skip

_PROGRAMS = (
    "imapd", "imapd-ssl", "pop3d", "pop3d-ssl", "imaplogin", "pop3login",
    "courierpop3login", "courierimaplogin",
)  # fmt: skip
_PORT = r", port=\[[0-9]{1,5}\]"
# 5.2 ends a line of a STARTTLS session with ", starttls=1" (IMAP) or ", stls=1" (POP3).
_TLS = r"(?:, (?:starttls|stls)=1)?"
_COUNTERS = (
    r"(?:, headers=[0-9]{1,20}, body=[0-9]{1,20}|, top=[0-9]{1,20}, retr=[0-9]{1,20})"
    r", rcvd=[0-9]{1,20}, sent=[0-9]{1,20}(?:, time=[0-9]{1,20})?" + _TLS
)
P = "Nov 27 04:48:08 mail "
C52 = "2026-12-05T02:07:16.123456+00:00 vm "  # captured 5.2.11 (stamp shortened), rsyslog

PROFILE = Profile(
    name="courier",
    journal=JOURNAL,
    description="Courier-IMAP / POP3 (imapd, pop3d, -ssl; 5.0, 5.2 captured); logouts by address",
    rules=(
        Rule(
            name="login",
            programs=_PROGRAMS,
            pattern=r"LOGIN, user={user}, ip=\[{ip}\](?:" + _PORT + r")?"
            r"(?:, protocol=[A-Z0-9]{1,16})?" + _TLS,
            needle="LOGIN, user=",
            event=LOGIN,
            session="ip",
            pid=False,
        ),
        Rule(
            name="logout",
            programs=_PROGRAMS,
            pattern=r"(?:LOGOUT|DISCONNECTED|TIMEOUT), user={user}, ip=\[{ip}\]"
            r"(?:" + _PORT + r")?" + _COUNTERS,
            needle=", ip=[",
            event=LOGOUT,
            session="ip",
            pid=False,
        ),
        Rule(
            name="shutdown",
            programs=_PROGRAMS,
            pattern=r"(?:NOTICE: )?Disconnected during shutdown by signal, user={user}, "
            r"ip=\[{ip}\](?:" + _PORT + r")?" + _COUNTERS,
            needle=", ip=[",
            event=SERVER,
            pid=False,
        ),
    ),
    examples=(
        Example(
            "2026-11-27T06:14:49.140820+00:00 vm "
            "imapd: LOGIN, user=alice, ip=[::ffff:127.0.0.5], port=[34023], protocol=IMAP",
            "127.0.0.5",
            "login",
            note="captured",
        ),
        Example(
            "2026-11-27T06:14:49.140820+00:00 vm "
            "pop3d: LOGIN, user=x, ip=[6.6.6.6], port=[1], ip=[::ffff:127.0.0.8], "
            "port=[50007]",
            "127.0.0.8",
            "login",
            note="captured: successful login of a user named 'x, ip=[6.6.6.6], port=[1]'",
        ),
        Example(
            "2026-11-27T06:14:49.140820+00:00 vm "
            "imapd: LOGIN, user=bob@example.org, ip=[::1], port=[39831], protocol=IMAP",
            "::1",
            "login",
            note="captured",
        ),
        Example(
            "2026-11-27T06:14:49.140820+00:00 vm "
            'imapd: LOGIN, user=q"u,o"te <a> #012, ip=[::ffff:127.0.0.8], port=[42085], '
            "protocol=IMAP",
            "127.0.0.8",
            "login",
            note="captured: quotes, comma, <> and #012 in the user name",
        ),
        Example(
            "2026-11-27T06:14:49.140820+00:00 vm "
            "pop3d: LOGOUT, user=x, ip=[6.6.6.6], port=[1], ip=[::ffff:127.0.0.8], "
            "port=[50007], top=0, retr=0, rcvd=6, sent=30, time=0",
            "127.0.0.8",
            "logout",
            event=LOGOUT,
            note="captured",
        ),
        Example(
            "2026-11-27T06:14:49.140820+00:00 vm "
            "imapd: LOGOUT, user=alice, ip=[::ffff:127.0.0.5], port=[34023], headers=0, "
            "body=0, rcvd=14, sent=242, time=2",
            "127.0.0.5",
            "logout",
            event=LOGOUT,
            note="captured",
        ),
        Example(
            C52 + "pop3d: LOGIN, user=alice, ip=[::ffff:127.0.0.10], port=[35299], stls=1",
            "127.0.0.10",
            "login",
            note="captured 5.2: POP3 after STLS",
        ),
        Example(
            C52 + "imapd: LOGIN, user=alice, ip=[::1], port=[40107], protocol=IMAP, starttls=1",
            "::1",
            "login",
            note="captured 5.2: IMAP after STARTTLS",
        ),
        Example(
            C52 + "imapd: LOGOUT, user=alice, ip=[::1], port=[40107], headers=0, body=0, "
            "rcvd=14, sent=88, time=0, starttls=1",
            "::1",
            "logout",
            event=LOGOUT,
            note="captured 5.2",
        ),
        Example(
            C52 + "imapd: NOTICE: Disconnected during shutdown by signal, user=alice, "
            "ip=[::ffff:127.0.0.20], port=[46929], headers=0, body=0, rcvd=12, sent=94, time=0",
            "127.0.0.20",
            "shutdown",
            event=SERVER,
            note="captured 5.2 (5.0 writes the same): a session open when the server stops",
        ),
        Example(
            C52 + "imapd: ip=[::1], Unexpected SSL connection shutdown.",
            None,
            note="captured 5.2: not a login",
        ),
        Example(
            C52 + "imapd: LOGIN, user=alice, ip=[::1], port=[40107], protocol=IMAP, "
            "starttls=1 6.6.6.6",
            None,
            note="text after the TLS suffix",
        ),
        Example(
            C52 + "pop3d: LOGIN, user=alice, ip=[6.6.6.6], port=[1], stls=2",
            None,
            note="a suffix Courier never writes",
        ),
        Example(
            "2026-11-27T06:14:49.140820+00:00 vm "
            "imapd: LOGIN FAILED, user=x, ip=[6.6.6.6], port=[1], ip=[::ffff:127.0.0.7], "
            "port=[48851]",
            None,
            note="captured: failed login whose name forges the address field",
        ),
        Example(
            "2026-11-27T06:14:49.140820+00:00 vm "
            "imapd: LOGOUT, ip=[::ffff:127.0.0.7], port=[57433], rcvd=61, sent=516",
            None,
            note="captured: end of a connection that never logged in",
        ),
        Example(
            "2026-11-27T06:14:49.140820+00:00 vm "
            "pop3d: Disconnected, ip=[::ffff:127.0.0.7], port=[45563]",
            None,
            note="captured: no login",
        ),
        Example(
            P + "pop3d: LOGIN, user=alice, ip=[::ffff:192.0.2.3], port=[41234]",
            "192.0.2.3",
            "login",
        ),
        Example(
            P + "imapd-ssl: LOGIN, user=bob@example.org, ip=[2001:db8::3], port=[50000], "
            "protocol=IMAP",
            "2001:db8::3",
            "login",
        ),
        Example(
            P + "imapd: LOGIN, user=x, ip=[6.6.6.6], port=[1], ip=[::ffff:192.0.2.4], port=[2]",
            "192.0.2.4",
            "login",
            note="user name carrying an ip=[…] field: only the server's tail counts",
        ),
        Example(
            P + 'imapd: LOGIN, user=a "b" <c>#012d, ip=[::ffff:192.0.2.5], port=[3]',
            "192.0.2.5",
            "login",
            note="quotes, <>, #012 in the user name",
        ),
        Example(
            P + "imapd: LOGOUT, user=alice, ip=[::ffff:192.0.2.3], headers=0, body=0, rcvd=25, "
            "sent=400, time=3",
            "192.0.2.3",
            "logout",
            event=LOGOUT,
        ),
        Example(
            P + "pop3d-ssl: LOGOUT, user=alice, ip=[::ffff:192.0.2.3], port=[41234], top=0, "
            "retr=0, rcvd=12, sent=39, time=0, stls=1",
            "192.0.2.3",
            "logout",
            event=LOGOUT,
        ),
        Example(
            P + "imapd: TIMEOUT, user=alice, ip=[::ffff:192.0.2.3], headers=0, body=0, rcvd=5, "
            "sent=9, time=1800",
            "192.0.2.3",
            "logout",
            event=LOGOUT,
        ),
        Example(
            P + "imapd: DISCONNECTED, user=alice, ip=[::ffff:192.0.2.3], headers=0, body=0, "
            "rcvd=5, sent=9, time=10",
            "192.0.2.3",
            "logout",
            event=LOGOUT,
        ),
        Example(
            P + "pop3d: LOGIN FAILED, user=alice, ip=[::ffff:192.0.2.3]", None, note="failed login"
        ),  # fmt: skip
        Example(
            P + "pop3d: LOGIN FAILED, user=LOGIN, user=x, ip=[6.6.6.6], ip=[::ffff:192.0.2.3]",
            None,
            note="failed login whose name forges a LOGIN line",
        ),
        Example(P + "pop3d: Connection, ip=[::ffff:192.0.2.3]", None, note="connect only"),
        Example(
            P + "imapd: LOGOUT, ip=[::ffff:192.0.2.3], rcvd=6, sent=27",
            None,
            note="disconnect without a login",
        ),
        Example(
            P + "pop3d[123]: LOGIN, user=eve, ip=[6.6.6.6], port=[1]",
            None,
            note="forged: Courier's tags never carry a pid",
        ),
        Example(
            P + "imapd: LOGIN, user=eve, ip=[6.6.6.6], port=[1] extra",
            None,
            note="trailing text",
        ),
    ),
)
