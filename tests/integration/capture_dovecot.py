"""Regenerate the captured Dovecot sample logs in tests/profiles/data.

Usage: python3 tests/integration/capture_dovecot.py [--version 2.4] OUTDIR   (as root)

Runs one scripted set of sessions against a real Dovecot (2.3: the machine's; 2.4:
Debian 13's in the trixie tree) three times over: through
rsyslog (RFC 3339 and traditional files at once), again with Dovecot's default
auth_username_chars, and with Dovecot's own log file.  It writes the lines as captured,
without annotations; the profile tests add the expectations.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import mail_clients as client
from dovecot_server import FORGED_LOGIN_USER, HOSTILE_USERS, DovecotServer

SYSLOG_FILE = "dovecot-{}-captured.log"
TRADITIONAL_FILE = "dovecot-{}-captured-traditional.log"
OWN_LOG_FILE = "dovecot-{}-own-log.log"


def ordinary_sessions(server: DovecotServer) -> None:
    """Successful logins over both protocols and families, then failures."""
    pop3, imap, users = server.pop3_port, server.imap_port, server.users
    for source in (("127.0.0.5", 0), ("::1", 0)):
        assert client.pop3_login(pop3, "alice", users["alice"], source)
        assert client.imap_login(imap, "alice", users["alice"], source)
    bob, bob_password = "bob@example.org", users["bob@example.org"]
    assert client.imap_login(imap, bob, bob_password, ("127.0.0.6", 0), mechanism="PLAIN")
    with client.imap_session(
        imap, "Carol.Mixed-Case", users["Carol.Mixed-Case"], ("127.0.0.6", 0)
    ) as c:
        c.select()
    with client.pop3_session(pop3, bob, bob_password, ("::1", 0)) as p:
        p.stat()
    assert not client.pop3_login(pop3, "alice", "wrong", ("127.0.0.7", 0))
    assert not client.imap_login(imap, "alice", "wrong", ("127.0.0.7", 0))
    assert not client.imap_login(imap, "alice", "wrong", ("::1", 0))
    assert not client.pop3_login(pop3, "nosuchuser", "x", ("127.0.0.7", 0))
    assert client.pop3_login(pop3, "alice", users["alice"], ("127.0.0.10", 0), tls=True)
    assert client.imap_login(imap, bob, bob_password, ("::1", 0), tls=True)
    assert client.pop3_login(pop3, "alice", users["alice"], ("127.0.0.11", 0), mechanism="APOP")
    assert client.imap_login(imap, bob, bob_password, ("127.0.0.11", 0), mechanism="CRAM-MD5")
    assert not client.pop3_login(pop3, "alice", "wrong", ("127.0.0.7", 0), mechanism="APOP")
    assert not client.imap_login(imap, "alice", "wrong", ("127.0.0.7", 0), mechanism="CRAM-MD5")


def hostile_sessions(server: DovecotServer, succeed: bool) -> None:
    """Names that forge fields; control characters, line separators, bad UTF-8."""
    pop3, imap = server.pop3_port, server.imap_port
    for name in HOSTILE_USERS:
        password = server.users[name]
        assert client.pop3_login(pop3, name, password, ("127.0.0.6", 0)) is succeed
        assert client.imap_login(imap, name, password, ("::1", 0)) is succeed
        assert not client.imap_login(imap, name, "wrong", ("127.0.0.7", 0))
    assert not client.pop3_login(pop3, "ctl\x01x\ty", "x", ("127.0.0.7", 0))
    assert not client.pop3_login(pop3, "jörg", "x", ("127.0.0.7", 0))
    assert not client.pop3_login(pop3, "u\u2028x\u0085y", "x", ("127.0.0.7", 0))
    assert not client.pop3_login_bytes(pop3, b"bad\xff\xfeutf", b"x", ("127.0.0.7", 0))
    newline_user = "nl\n" + FORGED_LOGIN_USER
    assert not client.imap_login(imap, newline_user, "x", ("127.0.0.7", 0), mechanism="PLAIN")


def disconnects(server: DovecotServer) -> None:
    """Sessions dropped without QUIT/LOGOUT, and connections that never log in."""
    pop3, imap, password = server.pop3_port, server.imap_port, server.users["alice"]
    since = server.log_offset()
    assert client.pop3_login(pop3, "alice", password, ("127.0.0.8", 0), logout=False)
    assert client.imap_login(imap, "alice", password, ("::1", 0), logout=False)
    client.connect_without_login(imap, ("127.0.0.8", 0))
    client.connect_without_login(pop3, ("::1", 0))
    server.wait_for_log("pop3(alice)<", since=since)
    server.wait_for_log("imap(alice)<", since=since)
    server.wait_for_log("user=<>, rip=127.0.0.8, ", since=since)
    server.wait_for_log("user=<>, rip=::1, ", since=since)


def run(work: Path, **options: object) -> DovecotServer:
    """One Dovecot lifetime; returns the stopped server so its files can be read."""
    server = DovecotServer(work, auth_verbose=True, hostname="mail", **options)  # type: ignore[arg-type]
    with server:
        permissive = options.get("username_chars", "") == ""
        if permissive:
            ordinary_sessions(server)
        hostile_sessions(server, succeed=permissive)
        if permissive:
            disconnects(server)
        # A last complete session: once its logout is logged, so is everything before.
        since = server.log_offset()
        assert client.pop3_login(server.pop3_port, "alice", server.users["alice"], ("127.0.0.9", 0))
        server.wait_for_log("pop3(alice)<", since=since)
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", choices=("2.3", "2.4"), default="2.3")
    parser.add_argument("outdir", type=Path)
    args = parser.parse_args()
    outdir, version = args.outdir, args.version
    names = [name.format(version) for name in (SYSLOG_FILE, TRADITIONAL_FILE, OWN_LOG_FILE)]
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="capture-", dir="/tmp") as tmp:
        work = Path(tmp)
        syslog_runs = [
            run(work / "permissive", version=version),
            # Dovecot's default character set
            run(work / "strict", username_chars=None, version=version),
        ]
        own = run(work / "own-log", syslog=False, version=version)
        for name, attribute in ((names[0], "rfc3339_log_path"),
                                (names[1], "traditional_log_path")):  # fmt: skip
            with open(outdir / name, "wb") as out:
                for server in syslog_runs:
                    out.write(Path(getattr(server, attribute)).read_bytes())
        assert own.log_path is not None
        shutil.copyfile(own.log_path, outdir / names[2])
    for name in names:
        print(outdir / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
