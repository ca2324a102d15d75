"""The command-line tools against a real lmdb table, with and without a daemon."""

from __future__ import annotations

import json
import time

import pytest
from postfix_instance import postmap_query
from support import Daemon, append, dovecot_login, noise, popbsmtp, write_config

from popbsmtp import __version__


def granted(tmp, ip):
    if not (tmp / "pbs.lmdb").exists():  # offline tools never create the table
        return False
    return postmap_query(ip, f"lmdb:{tmp}/pbs") == "OK"


def test_version_and_help():
    assert popbsmtp("--version").stdout.strip() == f"popbsmtp {__version__}"
    out = popbsmtp("--help").stdout
    for word in ("run", "list", "add", "remove", "flush", "test", "check-config", "profiles"):
        assert word in out


@pytest.mark.parametrize("running", [False, True], ids=["offline", "daemon"])
def test_add_remove_flush_list(pf_tmp, running):
    config = write_config(pf_tmp)
    cfg = ["--config", str(config)]
    daemon = Daemon(config).start() if running else None
    try:
        out = popbsmtp("add", "2001:DB8:0:1:2:3:4:7", "--for", "10m", *cfg).stdout
        who = "daemon" if running else "saved; the daemon is not running"
        assert "added 2001:db8:0:1:2:3:4:7" in out and who in out
        # With a daemon: in the table before the tool returned; without: saved only.
        assert granted(pf_tmp, "2001:db8:0:1:2:3:4:7") == running
        popbsmtp("add", "192.0.2.8", *cfg)
        rows = [json.loads(x) for x in popbsmtp("list", "--json", *cfg).stdout.splitlines()]
        assert {r["ip"] for r in rows} == {"2001:db8:0:1:2:3:4:7", "192.0.2.8"}
        assert all(r["profile"] == "manual" for r in rows)
        popbsmtp("remove", "192.0.2.8", *cfg)
        assert not granted(pf_tmp, "192.0.2.8")
        popbsmtp("flush", *cfg)
        assert not granted(pf_tmp, "2001:db8:0:1:2:3:4:7")
        assert popbsmtp("list", *cfg).stdout == ""
        popbsmtp("add", "192.0.2.9", *cfg)
    finally:
        if daemon:
            assert daemon.stop() == 0
    assert not granted(pf_tmp, "192.0.2.9")  # no daemon, no grant in the table
    with Daemon(config) as again:  # survives a (re)start
        assert granted(pf_tmp, "192.0.2.9")
        assert again.stop() == 0


def test_add_refuses_what_is_not_a_host_address(pf_tmp):
    config = write_config(pf_tmp)
    for bad in ("unknown", "10.0.0.0/8", "0.0.0.0", "192.0.2."):
        result = popbsmtp("add", bad, "--config", str(config), check=False)
        assert result.returncode == 1 and "error" in result.stderr


def test_test_json_reports_every_login_with_reason(pf_tmp):
    config = write_config(pf_tmp, ignore_networks="198.51.100.0/24", grace="30m")
    log = pf_tmp / "sample.log"
    now = time.time()
    append(log, noise(now))
    append(log, dovecot_login("192.0.2.1", now - 60))
    append(log, dovecot_login("198.51.100.4", now - 60))
    append(log, dovecot_login("192.0.2.2", now - 7200))
    append(log, "garbage without envelope: imap-login: Login: user=<x>\n")
    result = popbsmtp("test", "--json", str(log), "--config", str(config))
    records = [json.loads(x) for x in result.stdout.splitlines()]
    events, summary = records[:-1], records[-1]["summary"]
    assert [(e["line"], e["ip"], e["ignored"]) for e in events] == [
        (2, "192.0.2.1", None),
        (3, "198.51.100.4", "ignored network"),
        (4, "192.0.2.2", "too old"),
    ]
    assert all(e["profile"] == "dovecot" and e["event"] == "login" for e in events)
    assert events[0]["time"].startswith(time.strftime("%Y-%m-%d", time.gmtime(now - 60)))
    assert summary["lines"] == 5 and summary["matched"] == {"dovecot/login": 3}
    assert summary["unparseable"] == 1


def test_test_reads_stdin_and_prints_a_summary(pf_tmp):
    config = write_config(pf_tmp)
    result = popbsmtp("test", "-", "--config", str(config), input=dovecot_login("192.0.2.5"))
    assert "login 192.0.2.5 dovecot/login" in result.stdout
    assert "dovecot/login: 1" in result.stdout


def test_check_config_explain_names_sources(pf_tmp):
    config = write_config(pf_tmp)
    out = popbsmtp("check-config", "--explain", "--config", str(config), "--grace", "5m").stdout
    assert "grace = 5m" in out and "# command line" in out
    assert f"# {config}:2" in out  # map is line 2 of write_config's file
    assert "max_entries = 100000" in out and "# default" in out
    bad = pf_tmp / "bad.conf"
    bad.write_text("[popbsmtp]\nlogfile = /var/log/mail.log\ngrace = forever\n")
    result = popbsmtp("check-config", "--config", str(bad), check=False)
    assert result.returncode == 78
    assert f"{bad}:3: grace:" in result.stderr


def test_dry_run_writes_no_map(pf_tmp):
    config = write_config(pf_tmp)
    append(pf_tmp / "mail.log", dovecot_login("192.0.2.40"))
    with Daemon(config, "--dry-run") as daemon:
        daemon.wait_log("[dry run] granted 192.0.2.40")
        assert not (pf_tmp / "pbs.lmdb").exists()
        assert daemon.stop() == 0


def test_profiles_lists_each_profile():
    out = popbsmtp("profiles").stdout
    assert "dovecot " in out and "uw " in out


@pytest.mark.parametrize("running", [False, True], ids=["offline", "daemon"])
def test_remove_of_an_address_never_granted_says_so_and_fails(pf_tmp, running):
    config = write_config(pf_tmp)
    cfg = ["--config", str(config)]
    daemon = Daemon(config).start() if running else None
    try:
        popbsmtp("add", "192.0.2.30", *cfg)
        result = popbsmtp("remove", "192.0.2.31", *cfg, check=False)
        assert result.returncode == 1, result
        assert "192.0.2.31 is not granted; nothing to remove" in result.stderr
        assert "removed" not in result.stdout
        assert popbsmtp("remove", "192.0.2.30", *cfg).returncode == 0
    finally:
        if daemon is not None:
            daemon.stop()
