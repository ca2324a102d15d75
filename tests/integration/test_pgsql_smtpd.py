"""Several POP/IMAP hosts, one PostgreSQL table, one smtpd: all real.

Two popbsmtp daemons follow two logs and write one table, each its own rows;
a real smtpd asks the table through ``pgsql:`` and is probed with XCLIENT.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from pg_server import started
from postfix_instance import PostfixInstance, postmap_query
from support import Daemon, append, dovecot_login, popbsmtp, wait_for, write_config

A_CLIENT, B_CLIENT, BOTH, OUTAGE = "192.0.2.10", "192.0.2.20", "192.0.2.40", "192.0.2.30"


def _host(tmp: Path, dsn: str, name: str, grace: str) -> Path:
    home = tmp / name
    home.mkdir()
    home.chmod(0o755)
    table = home / "pgsql.cf"
    popbsmtp("pgsql-init", "--dsn", dsn, "--host-name", name, str(table))
    return write_config(home, map=f"pgsql:{table}", grace=grace, logfile=home / "mail.log")


def test_two_hosts_share_one_table_through_kill_and_database_restart(pf_tmp):
    pg = started(pf_tmp)
    daemons = []
    postfix = None
    try:
        table = pf_tmp / "postfix-pgsql.cf"
        popbsmtp("pgsql-init", "--dsn", pg.dsn, str(table))
        assert table.stat().st_mode & 0o777 == 0o640  # group postfix: smtpd reads it
        assert "expires_at > now()" in table.read_text()
        spec = f"pgsql:{table}"
        config_a = _host(pf_tmp, pg.dsn, "pop-a", "6s")
        config_b = _host(pf_tmp, pg.dsn, "pop-b", "1h")
        for config in (config_a, config_b):
            (config.parent / "mail.log").touch()
            daemons.append(Daemon(config).start())
        postfix = PostfixInstance(pf_tmp / "postfix", spec).start()
        # smtpd also asks for the client name 'unknown': a text key, so no SQL error (451).
        assert postfix.rcpt_as(A_CLIENT) == 554
        assert postmap_query("unknown", spec) is None

        append(config_a.parent / "mail.log", dovecot_login(A_CLIENT) + dovecot_login(BOTH))
        append(config_b.parent / "mail.log", dovecot_login(B_CLIENT) + dovecot_login(BOTH))
        for ip in (A_CLIENT, B_CLIENT, BOTH):
            wait_for(lambda ip=ip: postfix.rcpt_as(ip) == 250, 15, 0.05, f"{ip} relays")
        assert postmap_query(B_CLIENT, spec) == "OK"
        rows = pg.sql("SELECT host, key FROM popbsmtp_grants ORDER BY host, key")
        assert rows == [
            ("pop-a", A_CLIENT),
            ("pop-a", BOTH),
            ("pop-b", B_CLIENT),
            ("pop-b", BOTH),
        ]

        # A dead host's grants still end at their expiry, in SQL; the other's stay.
        daemons[0].stop(signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: postfix.rcpt_as(A_CLIENT) == 554, 15, 0.1, "A's client is refused")
        assert time.monotonic() - killed < 10
        assert postfix.rcpt_as(BOTH) == 250  # B's row for the same address still grants
        assert postfix.rcpt_as(B_CLIENT) == 250

        # The database goes away; a login during the outage is written after it.
        pg.stop()
        append(config_b.parent / "mail.log", dovecot_login(OUTAGE))
        daemons[1].wait_log(f"granted {OUTAGE}")
        daemons[1].wait_log("(retrying)")
        pg.start()
        wait_for(lambda: postfix.rcpt_as(OUTAGE) == 250, 90, 0.2, "the outage login relays")
        assert postmap_query(OUTAGE, spec) == "OK"
        # An smtpd whose connection the restart cut answers 451 (retry later) until
        # Postfix reconnects it: temporary, never a wrong 250.
        wait_for(lambda: postfix.rcpt_as(B_CLIENT) == 250, 90, 0.2, "B's client relays again")
        rows = pg.sql("SELECT key FROM popbsmtp_grants WHERE host = 'pop-b' ORDER BY key")
        assert rows == [(B_CLIENT,), (OUTAGE,), (BOTH,)]

        # A flush on one host withdraws its rows only.
        popbsmtp("flush", "-c", str(config_b))
        wait_for(lambda: postfix.rcpt_as(B_CLIENT) == 554, 15, 0.1, "B's flush is seen")
        assert pg.sql("SELECT count(*) FROM popbsmtp_grants WHERE host = 'pop-a'") == [(2,)]
    finally:
        if postfix is not None:
            postfix.stop()
        for daemon in daemons:
            daemon.kill()
        pg.stop()


def test_doctor_checks_the_database_table_and_query(pf_tmp):
    pg = started(pf_tmp)
    daemon = None
    try:
        config = _host(pf_tmp, pg.dsn, "pop-a", "1h")
        (config.parent / "mail.log").touch()
        popbsmtp("add", "192.0.2.9", "--for", "10m", "-c", str(config))  # saved for the start
        daemon = Daemon(config).start()
        wait_for(
            lambda: pg.sql("SELECT host, key FROM popbsmtp_grants") == [("pop-a", "192.0.2.9")],
            15,
            0.05,
            "the daemon writes the saved grant",
        )
        listed = popbsmtp("list", "--read-map", "-c", str(config), check=False).stdout
        assert "192.0.2.9" in listed and "in map, granted" in listed, listed
        out = popbsmtp("doctor", "-c", str(config), check=False).stdout
        assert "OK       pgsql: connected to 127.0.0.1:" in out, out
        assert "OK       pgsql: table popbsmtp_grants has host, key (text)" in out, out
        assert "OK       pgsql: the query takes only unexpired rows" in out, out
        assert "OK       postmap -q: finds granted client 192.0.2.9" in out, out
        daemon.stop()  # a clean stop withdraws this host's rows
        assert pg.sql("SELECT count(*) FROM popbsmtp_grants") == [(0,)]
        pg.sql("ALTER TABLE popbsmtp_grants ALTER COLUMN key TYPE varchar(64)")
        out = popbsmtp("doctor", "-c", str(config), check=False).stdout
        assert "ERROR    pgsql: table popbsmtp_grants lacks or mistypes key (text)" in out, out
        pg.stop()
        out = popbsmtp("doctor", "-c", str(config), check=False).stdout
        assert "ERROR    pgsql: cannot connect" in out, out
    finally:
        if daemon is not None:
            daemon.kill()
        pg.stop()
