"""An SMTP host's popbsmtp as a socketmap front fed by the shared PostgreSQL table.

All real: PostgreSQL (initdb + pg_ctl), a POP/IMAP host's ``popbsmtp run``
(``map = pgsql:``) following its log, a front's ``popbsmtp run``
(``grants_from = pgsql:``, ``map = socketmap:``) and an smtpd asking the
front, probed with XCLIENT.  One PostgreSQL serves the whole module.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest
from pg_server import PgServer, started
from postfix_instance import PostfixInstance, postmap_query
from support import Daemon, append, dovecot_login, noise, popbsmtp, wait_for, write_config
from test_socketmap_smtpd import LOCAL, LOCAL_DELIVERY, documented_order

V4, V6, V6_NEIGHBOUR, SHORT = "198.51.100.7", "2001:db8::1", "2001:db8::1:5", "192.0.2.50"
FULL = "2001:db8:1:2:3:4:5:6"  # all eight groups: the guarded query answers it
STALE_AFTER = 2.0


@pytest.fixture(scope="module")
def pg():
    path = Path(tempfile.mkdtemp(prefix="popbsmtp-pg-", dir="/tmp"))
    path.chmod(0o755)
    server = started(path)
    yield server
    server.stop()
    shutil.rmtree(path, ignore_errors=True)


def answer(key: str, table: str) -> str:
    """postmap -q's answer, or TEMP (the front has not read the table yet)."""
    try:
        return postmap_query(key, table) or "NOTFOUND"
    except AssertionError as exc:
        assert "temporary error" in str(exc), exc
        return "TEMP"


def _setup(pg: PgServer, tmp: Path, sockdir: Path):
    """(table file, POP host config, front config, socketmap table) on a fresh table."""
    pg.sql("DROP TABLE IF EXISTS popbsmtp_grants CASCADE")
    table = tmp / "popbsmtp-pgsql.cf"
    popbsmtp("pgsql-init", "--dsn", pg.dsn, "--host-name", "pop1", str(table))
    pop = tmp / "pop1"
    pop.mkdir()
    append(pop / "mail.log", noise())
    # The default ipv6_scope = exact: the guarded query lets compressed IPv6 keys in.
    pop_config = write_config(pop, map=f"pgsql:{table}", grace="1h")
    front = tmp / "smtp1"
    front.mkdir()
    socketmap = f"socketmap:unix:{sockdir}/socketmap:popbsmtp"
    front_config = write_config(
        front, map=socketmap, grants_from=f"pgsql:{table}", stale_after=f"{STALE_AFTER:g}s"
    )
    return table, pop_config, front_config, socketmap


def test_front_relays_pop_logins_exactly_and_fails_closed_without_the_database(pg, pf_tmp, sockdir):
    table, pop_config, front_config, socketmap = _setup(pg, pf_tmp, sockdir)
    pop_log = pop_config.parent / "mail.log"
    restrictions = documented_order(socketmap)
    with (
        Daemon(pop_config) as pop,
        Daemon(front_config) as front,
        PostfixInstance(
            pf_tmp / "postfix", socketmap, relay_restrictions=restrictions, extra=LOCAL_DELIVERY
        ) as postfix,
    ):
        # TEMP until the first full read, then NOTFOUND: the relay is refused.
        wait_for(lambda: postfix.rcpt_as(V4) == 554, 5, 0.05, "the front has read the table")

        logged = time.monotonic()
        append(pop_log, dovecot_login(V4) + dovecot_login(V6) + dovecot_login(SHORT))
        for ip in (V4, V6, SHORT):
            wait_for(lambda ip=ip: postfix.rcpt_as(ip) == 250, 3, 0.02, f"{ip} relays")
        assert time.monotonic() - logged < 3
        # Exact: an IPv6 grant covers one address at a front.
        assert postfix.rcpt_as(V6_NEIGHBOUR) == 554
        assert postmap_query(V6, socketmap) == "OK"
        assert postmap_query(V6_NEIGHBOUR, socketmap) is None
        assert postmap_query("unknown", socketmap) is None
        assert pg.sql("SELECT DISTINCT host FROM popbsmtp_grants") == [("pop1",)]

        # A deleted row (popbsmtp remove on the POP host) and a shortened one end relay.
        popbsmtp("remove", V4, "-c", str(pop_config))
        wait_for(lambda: postfix.rcpt_as(V4) == 554, 3, 0.02, "the removed client is refused")
        pg.sql(
            "UPDATE popbsmtp_grants SET expires_at = now() + interval '1 second'"
            f" WHERE key = '{SHORT}'"
        )
        wait_for(lambda: postfix.rcpt_as(SHORT) == 554, 5, 0.05, "the shortened grant ends")
        append(pop_log, dovecot_login(V4))
        wait_for(lambda: postfix.rcpt_as(V4) == 250, 3, 0.02, "a new login relays again")

        # The database goes away: after stale_after every relay attempt waits (4xx),
        # a granted client's too; mail for a local user still flows.
        pg.stop()
        stopped = time.monotonic()
        wait_for(lambda: 400 <= postfix.rcpt_as(V4) < 500, STALE_AFTER + 5, 0.05, "4xx")
        assert time.monotonic() - stopped < STALE_AFTER + 3
        assert 400 <= postfix.rcpt_as("203.0.113.9") < 500
        assert postfix.rcpt_as(V6, LOCAL) == 250
        front.wait_log("lookups get TEMP once the mirror is 2s old")

        # Back: the front reads everything again and the grants relay again.
        pg.start()
        wait_for(lambda: postfix.rcpt_as(V4) == 250, 30, 0.1, "the grant is back")
        assert postfix.rcpt_as(V6) == 250
        front.wait_log("reading pgsql:")

        # A POP host's clean stop withdraws its rows: the front sees that at once.
        assert pop.stop() == 0
        wait_for(lambda: postfix.rcpt_as(V6) == 554, 3, 0.02, "the stopped host's grant ends")
        assert front.stop() == 0
    assert not (sockdir / "socketmap").exists()  # fail closed: the socket went with it
    assert "UPDATE" not in front.log() and "INSERT" not in front.log()


def test_doctor_checks_the_front_and_pgsql_init_is_idempotent(pg, pf_tmp, sockdir):
    table, pop_config, front_config, socketmap = _setup(pg, pf_tmp, sockdir)
    popbsmtp("add", "192.0.2.9", "--for", "10m", "-c", str(pop_config))
    with Daemon(pop_config), Daemon(front_config) as front:
        wait_for(lambda: answer("192.0.2.9", socketmap) == "OK", 5, 0.05, "granted")
        out = popbsmtp("doctor", "-c", str(front_config), check=False).stdout
        assert "OK       pgsql: connected to 127.0.0.1:" in out, out
        assert "OK       pgsql trigger: table popbsmtp_grants notifies its changes" in out, out
        assert "OK       socketmap daemon: answers on" in out, out
        assert "192.0.2.9 -> OK" in out, out
        assert "OK       postmap -q: finds granted client 192.0.2.9" in out, out
        [daemon] = [line for line in out.splitlines() if " daemon: popbsmtp is" in line]
        assert f"answering from pgsql:{table}" in daemon and "state saved" not in daemon, daemon

        # The front holds no grants of its own: add/remove belong on a POP/IMAP host.
        refused = popbsmtp("add", "192.0.2.11", "-c", str(front_config), check=False)
        assert refused.returncode != 0 and "socketmap front" in refused.stderr, refused.stderr
        explained = popbsmtp("check-config", "--explain", "-c", str(front_config)).stdout
        assert f"# source: pgsql:{table}, as a socketmap front" in explained, explained

        # Run again on the live table: rows kept, one trigger, still notifying.
        popbsmtp("pgsql-init", "--dsn", pg.dsn, "--force", str(table))
        assert pg.sql("SELECT key FROM popbsmtp_grants") == [("192.0.2.9",)]
        count = "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'popbsmtp_grants_notify%'"
        assert pg.sql(count) == [(2,)]  # rows, and TRUNCATE
        popbsmtp("add", "192.0.2.10", "--for", "10m", "-c", str(pop_config))
        wait_for(lambda: postmap_query("192.0.2.10", socketmap) == "OK", 3, 0.02, "notified")

        # SIGHUP: the log level applies at once, other changes wait for a restart.
        write_config(
            front_config.parent, map=socketmap, grants_from=f"pgsql:{table}",
            stale_after="9s", log_level="debug",
        )  # fmt: skip
        assert front.proc is not None
        front.proc.send_signal(signal.SIGHUP)
        front.wait_log("changed options need a restart to take effect", timeout=10)
        assert "stale_after" in front.log().rsplit("need a restart", 1)[1].splitlines()[0]
        assert postmap_query("192.0.2.9", socketmap) == "OK"  # still answering

        # Without the trigger the front falls back to reading every row, and says so.
        pg.sql("DROP TRIGGER popbsmtp_grants_notify ON popbsmtp_grants")
        out = popbsmtp("doctor", "-c", str(front_config), check=False).stdout
        assert "WARNING  pgsql trigger: table popbsmtp_grants has no trigger" in out, out
        front.wait_log("has no trigger popbsmtp_grants_notify", timeout=10)
        popbsmtp("remove", "192.0.2.10", "-c", str(pop_config))
        wait_for(lambda: postmap_query("192.0.2.10", socketmap) is None, 5, 0.05, "polled")
        assert front.stop() == 0


def test_guarded_query_keeps_compressed_ipv6_keys_for_fronts(pg, pf_tmp, sockdir):
    """Default ipv6_scope = exact: the POP host writes 2001:db8::1 into the table;
    an smtpd asking the table itself never relays it nor its neighbour (partial
    keys), a front relays exactly it; an old file without the guard refuses it."""
    table, pop_config, front_config, socketmap = _setup(pg, pf_tmp, sockdir)
    direct = f"pgsql:{table}"
    with (
        Daemon(pop_config) as pop,
        Daemon(front_config),
        PostfixInstance(pf_tmp / "postfix", direct) as postfix,
    ):
        append(pop_config.parent / "mail.log", dovecot_login(V6) + dovecot_login(FULL))
        wait_for(lambda: answer(V6, socketmap) == "OK", 5, 0.05, "the front grants 2001:db8::1")
        rows = pg.sql("SELECT key FROM popbsmtp_grants ORDER BY key")
        assert rows == [(FULL,), (V6,)]
        assert "not granting" not in pop.log()
        assert answer(V6_NEIGHBOUR, socketmap) == "NOTFOUND"
        # smtpd with check_client_access pgsql:FILE: the eight-group key relays,
        # the compressed one (and its neighbour, by partial key) do not.
        wait_for(lambda: postfix.rcpt_as(FULL) == 250, 5, 0.05, "the eight-group key relays")
        assert postfix.rcpt_as(V6) == 554
        assert postfix.rcpt_as(V6_NEIGHBOUR) == 554
        assert postfix.rcpt_as("2001:db8:1:2:3:4:5:7") == 554
        assert postmap_query(FULL, direct) == "OK"
        assert postmap_query(V6, direct) is None
        assert postmap_query("2001:db8:", direct) is None  # one of smtpd's partial keys
        doctor = popbsmtp("doctor", "-c", str(pop_config), check=False).stdout
        assert f"OK       ipv6: the query in {table} answers IPv4 keys and IPv6" in doctor, doctor

        # An old file (no guard): compressed keys are refused again, with the fix.
        old_query = (
            "query = SELECT 'OK' FROM popbsmtp_grants WHERE key = '%s'"
            " AND expires_at > now() LIMIT 1"
        )
        lines = table.read_text().splitlines()
        table.write_text(
            "".join(
                (old_query if line.startswith("query =") else line) + "\n"
                for line in lines
                if not line.startswith("popbsmtp_ipv6")
            )
        )
        assert postmap_query(V6, direct) == "OK"  # what the guard prevented
        added = popbsmtp("add", "2001:db8::7", "-c", str(pop_config), check=False)
        assert added.returncode != 0, added.stdout
        assert "re-run popbsmtp pgsql-init --force to get the guarded query" in added.stderr
        assert f"--host-name pop1 --force {table}" in added.stderr, added.stderr
        doctor = popbsmtp("doctor", "-c", str(pop_config), check=False).stdout
        assert f"WARNING  ipv6: the query in {table} is not guarded" in doctor, doctor

        # Restarted on the old file, the POP host refuses a compressed login and says why.
        assert pop.stop() == 0
        with Daemon(pop_config) as old_pop:
            assert f"compressed IPv6 logins are refused: the query in {table}" in old_pop.log()
            append(pop_config.parent / "mail.log", dovecot_login("2001:db8::9"))
            old_pop.wait_log("not granting 2001:db8::9")
            assert "re-run popbsmtp pgsql-init --force to get the guarded query" in old_pop.log()
            assert old_pop.stop() == 0
        assert pg.sql("SELECT key FROM popbsmtp_grants WHERE key = '2001:db8::9'") == []
