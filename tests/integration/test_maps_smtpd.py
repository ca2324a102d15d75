"""Every rebuilt table type against a real smtpd: login → relay, expiry → reject, no reload.

The daemon (real ``popbsmtp run``) rebuilds the table with ``postmap`` and
renames it in; a running smtpd must notice each replacement by itself, also
for two rebuilds within one second.
"""

from __future__ import annotations

import os
import random
import subprocess
import time

import pytest
from postfix_instance import PostfixInstance, postfix_tool, postmap_query
from support import Daemon, append, dovecot_login, noise, popbsmtp, wait_for, write_config

TYPES = ["hash", "btree", "cdb", "lmdb"]


@pytest.mark.parametrize("kind", TYPES)
def test_login_relays_then_expires_without_reload(pf_tmp, kind):
    table = f"{kind}:{pf_tmp}/pbs"
    config = write_config(pf_tmp, map=table, map_writer="rebuild", grace="4s")
    logfile = pf_tmp / "mail.log"
    append(logfile, noise())
    first = f"127.0.0.{random.randint(2, 120)}"
    second = f"127.0.0.{random.randint(121, 250)}"
    daemon = Daemon(config).start()
    try:
        with PostfixInstance(pf_tmp / "postfix", table) as postfix:
            master_pid = (pf_tmp / "postfix" / "queue" / "pid" / "master.pid").read_text()
            assert postfix.rcpt_status(first) == 554

            appended = time.monotonic()
            append(logfile, dovecot_login(first))
            wait_for(
                lambda: postfix.rcpt_status(first) == 250,
                timeout=1.0,
                what=f"{first} accepted by smtpd ({kind})",
            )
            assert time.monotonic() - appended < 1.0

            # A second rebuild right after the first: the smtpd that just
            # served `first` must notice the replaced file too.
            append(logfile, dovecot_login(second))
            wait_for(
                lambda: postfix.rcpt_status(second) == 250,
                timeout=1.0,
                what=f"{second} accepted right after another rebuild ({kind})",
            )
            assert postfix.rcpt_status(first) == 250

            wait_for(
                lambda: postfix.rcpt_status(first) == 554,
                timeout=8.0,
                interval=0.1,
                what=f"{first} rejected after expiry ({kind})",
            )
            assert postmap_query(first, table) is None
            same_master = (pf_tmp / "postfix" / "queue" / "pid" / "master.pid").read_text()
            assert same_master == master_pid  # no restart; and nobody ran postfix reload
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log()
    assert "reload" not in (pf_tmp / "postfix" / "postfix.log").read_text()
    assert "expired " + first in daemon.log()


def test_burst_of_logins_costs_few_rebuilds(pf_tmp):
    table = f"hash:{pf_tmp}/pbs"
    config = write_config(pf_tmp, map=table, log_level="debug")
    logfile = pf_tmp / "mail.log"
    clients = [f"10.1.{i // 250}.{i % 250 + 1}" for i in range(1000)]
    with Daemon(config) as daemon:
        before = daemon.log().count("rebuilt hash:")
        append(logfile, "".join(dovecot_login(ip) for ip in clients))
        wait_for(
            lambda: postmap_query(clients[-1], table) == "OK",
            timeout=5.0,
            what="last client of the burst in the table",
        )
        assert postmap_query(clients[0], table) == "OK"
        assert daemon.stop() == 0
    rebuilds = daemon.log().count("rebuilt hash:") - before
    assert 1 <= rebuilds <= 10, daemon.log()


@pytest.mark.parametrize("kind", ["hash", "cdb"])
def test_list_and_test_read_the_map_back(pf_tmp, kind):
    table = f"{kind}:{pf_tmp}/pbs"
    config = write_config(pf_tmp, map=table)
    cfg = ["--config", str(config)]
    popbsmtp("add", "192.0.2.8", *cfg)
    popbsmtp("add", "2001:db8:0:1:2:3:4:8", *cfg)
    out = popbsmtp("list", "--read-map", *cfg).stdout
    assert "192.0.2.8" in out and "2001:db8:0:1:2:3:4:8" in out and "in map, granted" in out
    assert f"{table}: 2 key(s); 2 grant(s); 0 differ" in out

    # Someone rebuilt the table behind popbsmtp's back: the tools show the difference.
    source = pf_tmp / "elsewhere"
    source.write_text("192.0.2.8 OK\n198.51.100.1 OK\n")
    subprocess.run([*postfix_tool("postmap"), f"{kind}:{source}"], check=True)
    suffix = ".db" if kind == "hash" else ".cdb"
    os.rename(f"{source}{suffix}", f"{pf_tmp}/pbs{suffix}")
    listed = popbsmtp("list", "--read-map", *cfg, check=False)
    assert listed.returncode == 1
    assert "198.51.100.1" in listed.stdout and "in map, NOT granted" in listed.stdout
    assert "2001:db8:0:1:2:3:4:8" in listed.stdout and "granted, NOT in map" in listed.stdout
    append(pf_tmp / "mail.log", dovecot_login("192.0.2.9"))
    tested = popbsmtp("test", "--read-map", *cfg, check=False)
    assert "192.0.2.9" in tested.stdout  # what the log would grant ...
    assert "198.51.100.1" in tested.stdout and "2 differ" in tested.stdout  # ... and the map


def test_read_map_reads_the_configured_or_the_named_table_back(pf_tmp):
    config = write_config(pf_tmp)
    cfg = ["--config", str(config)]
    popbsmtp("add", "192.0.2.61", *cfg)
    for command in ("list", "test"):
        out = popbsmtp(command, "--read-map", *cfg, "/dev/null" if command == "test" else "--json")
        assert "192.0.2.61" in out.stdout and "in map, granted" in out.stdout, out.stdout
    other = f"lmdb:{pf_tmp}/elsewhere"
    popbsmtp("add", "192.0.2.62", *cfg, "--map", other)
    out = popbsmtp("list", "--read-map", *cfg, "--map", other, check=False)
    assert "192.0.2.62" in out.stdout and "in map, granted" in out.stdout, out.stdout
