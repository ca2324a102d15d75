"""Fail closed when stopped: a stopped daemon leaves Postfix's table empty, never missing.

The real daemon (``popbsmtp run --foreground``) in a subprocess, real tables
read back with ``postmap -q``/``-s`` (lmdb written in place; hash and cdb
rebuilt by postmap and renamed), real signals.  Every Postfix tool, ours and
the daemon's, gets the tests' own Postfix config directory (``postfix_dir()``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from postfix_instance import PostfixInstance, postmap_query, require
from support import (
    Daemon,
    append,
    dovecot_login,
    popbsmtp,
    postfix_dir,
    wait_for,
    write_config,
)

from popbsmtp.grants.state import StateFile
from popbsmtp.maps import MapSpec
from popbsmtp.maps.rebuild import SUFFIXES, read_keys

CLIENT = "192.0.2.41"
# README's recommended smtpd_relay_restrictions, with the test's table.
RECOMMENDED = (
    "permit_mynetworks, permit_sasl_authenticated, check_client_access {table}, "
    "defer_unauth_destination"
)


def table_of(pf_tmp: Path, kind: str) -> str:
    return f"{kind}:{pf_tmp}/pbs"


def keys(table: str) -> set:
    return read_keys(MapSpec(*table.split(":", 1)), postfix_dir())


def files(table: str) -> list:
    kind, path = table.split(":", 1)
    return [Path(path + suffix) for suffix in SUFFIXES[kind]]


def saved_grants(pf_tmp: Path) -> set:
    return {row[0] for row in StateFile(str(pf_tmp / "state")).load().grants}


def granted_daemon(pf_tmp: Path, kind: str = "lmdb", **options: object) -> Daemon:
    """A running daemon with CLIENT granted by a real login line and in the table."""
    table = table_of(pf_tmp, kind)
    config = write_config(pf_tmp, map=table, grace="10m", **options)
    daemon = Daemon(config).start()
    append(pf_tmp / "mail.log", dovecot_login(CLIENT))
    wait_for(lambda: postmap_query(CLIENT, table) == "OK", what=f"{CLIENT} in {table}")
    return daemon


@pytest.mark.parametrize("kind", ["lmdb", "hash", "cdb"])
def test_term_empties_the_table_and_the_saved_grants_return_within_a_second(pf_tmp, kind):
    table = table_of(pf_tmp, kind)
    daemon = granted_daemon(pf_tmp, kind)
    assert daemon.stop(signal.SIGTERM) == 0, daemon.log()
    assert f"withdrew 1 clients from {table}" in daemon.log()
    assert all(f.is_file() for f in files(table)), "the table must stay (smtpd: 451 if missing)"
    assert keys(table) == set() and postmap_query(CLIENT, table) is None
    assert saved_grants(pf_tmp) == {CLIENT}

    spawned = time.monotonic()
    again = Daemon(daemon.config).start(ready=False)
    wait_for(lambda: postmap_query(CLIENT, table) == "OK", timeout=5, what="grant back")
    back = time.monotonic() - spawned
    assert back < 1.0, f"{CLIENT} came back {back:.2f}s after the start, not within 1 s"
    assert again.stop(signal.SIGINT) == 0  # Ctrl-C in the foreground: the same path
    assert keys(table) == set()


def test_restart_gap_is_measured(pf_tmp, capsys):
    """systemctl restart's equivalent: TERM, wait for the exit, ExecStopPost, start again."""
    table = table_of(pf_tmp, "lmdb")
    daemon = granted_daemon(pf_tmp)
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: postmap_query(CLIENT, table) is None, what="table emptied", interval=0.001)
    emptied = time.monotonic()
    assert daemon.proc.wait(15) == 0  # one TERM only: a second one means "exit now"
    daemon.stop()
    assert popbsmtp("withdraw", "--config", str(daemon.config)).stdout == ""  # already empty
    Daemon(daemon.config).start(ready=False)
    wait_for(lambda: postmap_query(CLIENT, table) == "OK", what="refilled", interval=0.001)
    gap = time.monotonic() - emptied
    with capsys.disabled():
        sys.stderr.write(f"\nrestart gap (table empty, TERM, withdraw, start): {gap:.3f} s\n")
    assert gap < 3.0, f"restart gap {gap:.2f}s"  # two Python starts; a loaded CI is slow


def test_a_client_in_the_gap_is_told_to_retry_by_the_real_smtpd(pf_tmp):
    """While the table is empty, README's restrictions answer 4xx, never a 5xx refusal."""
    table = table_of(pf_tmp, "lmdb")
    client = "127.0.0.42"
    config = write_config(pf_tmp, map=table, grace="10m")
    daemon = Daemon(config).start()
    append(pf_tmp / "mail.log", dovecot_login(client))
    wait_for(lambda: postmap_query(client, table) == "OK", what="grant")
    relay = RECOMMENDED.format(table=table)
    with PostfixInstance(pf_tmp / "postfix", table, relay_restrictions=relay) as smtpd:
        assert smtpd.rcpt_status(client) == 250
        assert daemon.stop() == 0
        code = smtpd.rcpt_status(client)
        assert 400 <= code < 500, f"an ungranted client got {code}, not a 4xx retry"
        assert code == 454  # defer_unauth_destination, as README says
        assert smtpd.rcpt_status("127.0.0.43") == code  # the same as any ungranted client
        with Daemon(config):
            wait_for(lambda: smtpd.rcpt_status(client) == 250, timeout=5, what="granted again")


def test_crash_leaves_grants_and_withdraw_empties_them(pf_tmp):
    table = table_of(pf_tmp, "lmdb")
    daemon = granted_daemon(pf_tmp)
    wait_for(lambda: saved_grants(pf_tmp) == {CLIENT}, what="the grant saved (paced)")
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    assert postmap_query(CLIENT, table) == "OK"  # what ExecStopPost is there for

    result = popbsmtp("withdraw", "--config", str(daemon.config))  # the unit's ExecStopPost
    assert result.stdout.startswith(f"withdrew 1 client(s) from {table}")
    assert keys(table) == set() and files(table)[0].is_file()
    assert saved_grants(pf_tmp) == {CLIENT}
    again = popbsmtp("withdraw", "--config", str(daemon.config), "--grace", "5m")
    assert again.stdout == "" and again.stderr == ""  # already empty: quiet
    with Daemon(daemon.config) as restarted:
        wait_for(lambda: postmap_query(CLIENT, table) == "OK", what="grant back after a crash")
        assert restarted.stop() == 0


@pytest.mark.parametrize("kind", ["lmdb", "hash"])
def test_withdraw_leaves_a_running_daemons_table_alone(pf_tmp, kind):
    table = table_of(pf_tmp, kind)
    daemon = granted_daemon(pf_tmp, kind)
    result = popbsmtp("withdraw", "--config", str(daemon.config))
    assert result.returncode == 0
    assert "popbsmtp is running" in result.stdout and "left to it" in result.stdout
    assert postmap_query(CLIENT, table) == "OK"
    assert daemon.stop() == 0
    assert keys(table) == set()


def test_withdraw_is_quiet_without_a_config_or_a_table(pf_tmp):
    gone = popbsmtp("withdraw", "--config", str(pf_tmp / "removed.conf"))
    assert (gone.returncode, gone.stdout, gone.stderr) == (0, "", "")
    config = write_config(pf_tmp)
    nothing = popbsmtp("withdraw", "--config", str(config))
    assert (nothing.returncode, nothing.stdout, nothing.stderr) == (0, "", "")
    assert not (pf_tmp / "pbs.lmdb").exists(), "withdraw must not create a table"
    assert not (pf_tmp / "state").exists()


def test_add_remove_flush_without_a_daemon_change_the_saved_state_only(pf_tmp):
    table = table_of(pf_tmp, "lmdb")
    daemon = granted_daemon(pf_tmp)
    assert daemon.stop() == 0
    cfg = ["--config", str(daemon.config)]
    offline = "saved; the daemon is not running, so Postfix's table is unchanged until it starts"

    added = popbsmtp("add", "192.0.2.50", *cfg)
    assert added.stdout.strip() == f"added 192.0.2.50 ({offline})"
    removed = popbsmtp("remove", CLIENT, *cfg)
    assert removed.stdout.strip() == f"removed {CLIENT} ({offline})"
    assert keys(table) == set()
    assert saved_grants(pf_tmp) == {"192.0.2.50"}

    with Daemon(daemon.config) as running:
        wait_for(lambda: postmap_query("192.0.2.50", table) == "OK", what="offline add applied")
        assert postmap_query(CLIENT, table) is None
        assert popbsmtp("add", "192.0.2.51", *cfg).stdout.strip() == "added 192.0.2.51 (daemon)"
        assert postmap_query("192.0.2.51", table) == "OK"  # before the tool returned
        assert running.stop() == 0

    flushed = popbsmtp("flush", *cfg)
    assert flushed.stdout.strip() == f"flushed ({offline})"
    assert saved_grants(pf_tmp) == set() and keys(table) == set()


def test_offline_change_after_a_crash_withdraws_the_leftovers(pf_tmp):
    table = table_of(pf_tmp, "lmdb")
    daemon = granted_daemon(pf_tmp)
    wait_for(lambda: saved_grants(pf_tmp) == {CLIENT}, what="the grant saved (paced)")
    daemon.stop(signal.SIGKILL)
    removed = popbsmtp("remove", CLIENT, "--config", str(daemon.config))
    assert f"withdrew 1 stale key(s) from {table}" in removed.stdout
    assert keys(table) == set() and saved_grants(pf_tmp) == set()


# -- exit 78: settings and permissions ---------------------------------------


def start_fails(config: Path, *wrap: str) -> subprocess.CompletedProcess:
    command = [*wrap, sys.executable, "-m", "popbsmtp", "run", "--foreground"]
    return subprocess.run(
        [*command, "--config", str(config)], capture_output=True, text=True, timeout=60
    )


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("popbsmtp: error: ")
    return lines[0]


UNPRIVILEGED = ("setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner")


def unprivileged() -> tuple:
    return (require("setpriv"), *UNPRIVILEGED[1:])


def test_table_directory_the_service_user_cannot_write_exits_78(pf_tmp):
    maps = pf_tmp / "readonly"
    maps.mkdir(mode=0o555)
    config = write_config(pf_tmp, map=f"lmdb:{maps}/pbs")
    try:
        result = start_fails(config, *unprivileged())
    finally:
        maps.chmod(0o755)
    assert result.returncode == 78, result.stderr
    line = one_line(result)
    assert f"map = lmdb:{maps}/pbs: user root cannot create files in the table directory" in line
    assert f"{maps}: Permission denied" in line
    assert "set map = lmdb:/etc/postfix/popbsmtp/clients" in line


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("state_dir open to others", "is writable by others"),
        ("table directory open to others", "table directory"),
        ("table directory missing", "No such file or directory; create it"),
        ("unreadable log", "Permission denied; let the daemon's user read it"),
        ("log_target unwritable", "log_target: cannot open log file"),
        ("symlinked table", "is a symbolic link"),
        ("bad value", "grace:"),
    ],
)
def test_setting_and_permission_errors_exit_78_with_one_line(pf_tmp, case, words):
    options: dict = {}
    wrap: tuple = ()
    if case == "state_dir open to others":
        (pf_tmp / "state").mkdir(mode=0o777)
        (pf_tmp / "state").chmod(0o777)
    elif case == "table directory open to others":
        (pf_tmp / "open").mkdir()
        (pf_tmp / "open").chmod(0o777)
        options["map"] = f"lmdb:{pf_tmp}/open/pbs"
    elif case == "table directory missing":
        options["map"] = f"lmdb:{pf_tmp}/absent/pbs"
    elif case == "unreadable log":
        os.close(os.open(pf_tmp / "mail.log", os.O_CREAT | os.O_WRONLY, 0o000))
        wrap = unprivileged()
    elif case == "log_target unwritable":
        options["log_target"] = f"{pf_tmp}/no-such-dir/daemon.log"
    elif case == "symlinked table":
        (pf_tmp / "pbs.lmdb").symlink_to(pf_tmp / "elsewhere")
    elif case == "bad value":
        options["grace"] = "forever"
    result = start_fails(write_config(pf_tmp, **options), *wrap)
    assert result.returncode == 78, result.stderr
    assert words in one_line(result)
