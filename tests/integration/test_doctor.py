"""``popbsmtp doctor`` against throw-away Postfix configurations (real postconf/postmap/smtpd).

One correct setup, the classic mistake (check only in
smtpd_recipient_restrictions while smtpd_relay_restrictions has its default),
an unsupported table type, and a master.cf service overriding the
restrictions.  Where the doctor says ERROR, a real smtpd must refuse the
granted client, and after running the ``--fix-hint`` commands accept it.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from postfix_instance import PostfixInstance, free_port, require
from support import Daemon, append, dovecot_login, popbsmtp, wait_for, write_config

from popbsmtp import postfix

GRANTED = "127.0.0.77"
DEFAULT_RELAY = "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination"


def setup(tmp: Path, kind: str = "hash", **postfix: str) -> tuple:
    table = f"{kind}:{tmp}/pbs"
    config = write_config(tmp, map=table)
    append(tmp / "mail.log", dovecot_login("192.0.2.5"))
    instance = PostfixInstance(tmp / "postfix", table, **postfix)
    instance.write_config()
    return config, instance, table


def grant(config: Path) -> Daemon:
    """A running daemon with GRANTED in its table (a stopped one leaves the table empty)."""
    daemon = Daemon(config).start()  # conftest stops it after the test
    popbsmtp("add", GRANTED, "--config", str(config))
    return daemon


def doctor(config: Path, instance: PostfixInstance, *extra: str) -> subprocess.CompletedProcess:
    return popbsmtp(
        "doctor", "--config", str(config), "--postfix-dir", str(instance.etc), *extra, check=False
    )


def lines(result: subprocess.CompletedProcess, level: str) -> list:
    return [x for x in result.stdout.splitlines() if x.startswith(level)]


def test_correct_setup_is_all_ok(pf_tmp):
    config, instance, table = setup(pf_tmp)
    grant(config)
    result = doctor(config, instance)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines(result, "ERROR") == []
    out = result.stdout
    assert f"OK       map: {table} exists and postfix (mail_owner) can read it" in out
    assert f"finds granted client {GRANTED}" in out
    assert "is in smtpd_relay_restrictions before the relay decision" in out
    assert "1 logins recognised" in out
    assert "ignore_networks: none" in out
    assert "OK       daemon: popbsmtp is running" in out
    assert f"OK       service user: root can create files in {pf_tmp}" in out
    assert "speedups" not in out  # pure Python: nothing optional to report
    assert doctor(config, instance, "--fix-hint").stdout == ""


def test_check_only_in_recipient_restrictions_is_an_error_and_the_hint_fixes_it(pf_tmp):
    config, instance, table = setup(
        pf_tmp,
        relay_restrictions=DEFAULT_RELAY,
        recipient_restrictions=f"check_client_access hash:{pf_tmp}/pbs, reject_unauth_destination",
    )
    grant(config)
    result = doctor(config, instance)
    assert result.returncode == 1
    [error] = lines(result, "ERROR")
    assert "only in smtpd_recipient_restrictions" in error and "454" in error
    assert "fix: postconf -c" in result.stdout

    hint = doctor(config, instance, "--fix-hint").stdout.splitlines()
    assert hint[-1] == shlex.join(["postfix", "-c", str(instance.etc), "reload"])
    assert hint[0].startswith(f"postconf -c {instance.etc} -e 'smtpd_relay_restrictions = ")
    with instance:
        assert instance.rcpt_status(GRANTED) == 454  # what the doctor predicted
        for command in hint[:-1]:
            subprocess.run(shlex.split(command), check=True)
        instance.postfix("reload")
        assert _eventually_accepted(instance)
    assert doctor(config, instance).returncode == 0


def test_unsupported_map_type(pf_tmp):
    config, instance, _ = setup(pf_tmp, kind="dbm")
    result = doctor(config, instance)
    assert result.returncode == 1
    [error] = lines(result, "ERROR")
    assert "dbm: is not a table type this Postfix reads (postconf -m: " in error
    assert "hash" in error
    assert "set map = hash:" in result.stdout  # default_database_type on Debian
    start = popbsmtp("run", "--foreground", "--config", str(config), check=False)
    assert start.returncode == 78
    assert "table type 'dbm' is not supported" in start.stderr and "postconf -m" in start.stderr


def test_master_cf_service_overriding_restrictions(pf_tmp):
    config, instance, table = setup(pf_tmp)
    grant(config)
    port = free_port()
    with instance:
        with open(instance.etc / "master.cf", "a") as master:
            master.write(
                f"127.0.0.1:{port} inet n - n - - smtpd\n"
                "  -o smtpd_relay_restrictions="
                "permit_sasl_authenticated,reject_unauth_destination\n"
            )
        instance.postfix("reload")
        main_port, instance.port = instance.port, port  # ask the overriding service itself
        assert wait_for(lambda: _status(instance) == 554, timeout=10, what="override listening")

        result = doctor(config, instance)
        assert result.returncode == 1
        [error] = lines(result, "ERROR")
        assert f"master.cf 127.0.0.1:{port}/inet" in error
        assert "is not in smtpd_relay_restrictions" in error
        assert any("main.cf" in x and "before the relay decision" in x for x in lines(result, "OK"))

        hint = doctor(config, instance, "--fix-hint").stdout.splitlines()
        assert hint[0] == shlex.join(
            [
                "postconf", "-c", str(instance.etc), "-P",
                f"127.0.0.1:{port}/inet/smtpd_relay_restrictions=permit_sasl_authenticated,"
                f"check_client_access,{table},reject_unauth_destination",
            ]
        )  # fmt: skip
        subprocess.run(shlex.split(hint[0]), check=True)
        after = doctor(config, instance)
        assert after.returncode == 0, after.stdout
        instance.postfix("reload")
        assert _eventually_accepted(instance)
        instance.port = main_port


def test_unreachable_check_is_a_warning(pf_tmp):
    config, instance, table = setup(
        pf_tmp,
        relay_restrictions=f"permit_mynetworks, reject, check_client_access hash:{pf_tmp}/pbs",
    )
    grant(config)
    result = doctor(config, instance)
    assert result.returncode == 0
    assert any("unreachable after 'reject'" in x for x in lines(result, "WARNING"))


def _status(instance: PostfixInstance):
    try:
        return instance.rcpt_status(GRANTED)
    except OSError:  # the service is not listening yet
        return None


def _eventually_accepted(instance: PostfixInstance) -> bool:
    return wait_for(
        lambda: _status(instance) == 250,
        timeout=10,
        interval=0.1,
        what="granted client accepted after the fix",
    )


def test_running_daemon_and_last_write_are_reported(pf_tmp):
    config, instance, _ = setup(pf_tmp)
    with Daemon(config) as daemon:
        append(pf_tmp / "mail.log", dovecot_login(GRANTED))
        wait_for(lambda: f"granted {GRANTED}" in daemon.log(), what="grant")
        # The doctor reads the saved grants, which follow the table within a second.
        state = pf_tmp / "state" / "state.json"
        wait_for(lambda: GRANTED in state.read_text(), what="the grant saved")
        result = doctor(config, instance)
        assert daemon.stop() == 0
    assert result.returncode == 0, result.stdout
    [line] = [x for x in result.stdout.splitlines() if " daemon: " in x]
    assert line.startswith("OK       daemon: popbsmtp is running")
    assert "map written " in line and "state saved " in line
    assert f"finds granted client {GRANTED}" in result.stdout


T = "hash:/etc/postfix/pbs"


@pytest.mark.parametrize(
    ("relay", "recipient", "level", "words"),
    [
        (
            f"permit_mynetworks, check_client_access {T}, defer_unauth_destination",
            "",
            "OK",
            "before",
        ),
        (
            f"permit_mynetworks check_client_access proxy:{T} reject_unauth_destination",
            "",
            "OK",
            "",
        ),
        ("", f"permit_mynetworks, check_client_access {T}, reject_unauth_destination", "OK", ""),
        (f"reject_unauth_destination, check_client_access {T}", "", "ERROR", "comes after"),
        (DEFAULT_RELAY, f"check_client_access {T}", "ERROR", "454"),
        (DEFAULT_RELAY, "", "ERROR", "is not in smtpd_relay_restrictions"),
        (f"permit_mynetworks, permit, check_client_access {T}", "", "WARNING", "after 'permit'"),
        (f"check_client_access hash:/etc/postfix/other, {DEFAULT_RELAY}", "", "ERROR", "not in"),
    ],
)
def test_placement_verdicts(relay, recipient, level, words):
    found, why = postfix.placement(relay, recipient, T)
    assert found == level and words in why


def test_fix_command_keeps_the_rest_of_the_list():
    relay = f"permit_mynetworks, reject_unauth_destination, check_client_access {T}, permit"
    command = postfix.fix_command(relay, T, None, None)
    assert command == (
        "postconf -e 'smtpd_relay_restrictions = permit_mynetworks, "
        f"check_client_access {T}, reject_unauth_destination, permit'"
    )
    fixed = shlex.split(command)[-1].split(" = ", 1)[1]
    assert postfix.placement(fixed, "", T)[0] == "OK"


def test_unreadable_map_and_log_without_matching_profile(pf_tmp):
    config, instance, table = setup(pf_tmp)
    with open(config, "a") as extra:
        extra.write("map_mode = 0600\nprofiles = uw\n")
    grant(config)
    result = doctor(config, instance)
    assert result.returncode == 1
    [error] = lines(result, "ERROR")
    assert f"the Postfix user postfix cannot read {pf_tmp}/pbs.db: " in error and "0600" in error
    [log] = [x for x in lines(result, "WARNING") if " log: " in x]
    assert "the configured profiles match no login" in log and "dovecot" in log

    (pf_tmp / "mail.log").write_text("")
    quiet = doctor(config, instance)
    assert any("no POP/IMAP logins found" in x for x in lines(quiet, "WARNING"))


def test_a_filled_table_without_a_daemon_is_an_error_until_withdrawn(pf_tmp):
    config, instance, table = setup(pf_tmp)
    crashed = grant(config)
    crashed.stop(signal.SIGKILL)  # a crash: nobody emptied the table
    result = doctor(config, instance)
    assert result.returncode == 1
    [error] = lines(result, "ERROR")
    assert (
        f"daemon: popbsmtp is not running but {table} holds 2 client(s)" in error
    )  # and the log's
    assert "or empty it: popbsmtp withdraw" in result.stdout
    popbsmtp("withdraw", "--config", str(config))
    after = doctor(config, instance)
    assert after.returncode == 0, after.stdout
    assert "WARNING  daemon: popbsmtp is not running;" in after.stdout
    assert f"popbsmtp is not running, so {table} is empty by design" in after.stdout


def test_a_service_user_that_cannot_write_the_table_directory_is_an_error(pf_tmp):
    config, instance, table = setup(pf_tmp)
    with Daemon(config) as daemon:  # creates the table, then empties it at stop
        assert daemon.stop() == 0
    as_nobody = [require("setpriv"), "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    command = [sys.executable, "-m", "popbsmtp", "doctor", "--config", str(config)]
    result = subprocess.run(
        [*as_nobody, *command, "--postfix-dir", str(instance.etc)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    [error] = [x for x in lines(result, "ERROR") if "service user" in x]
    assert f"nobody cannot create files in {pf_tmp}: {pf_tmp} has mode 0755, owner root:" in error
    assert "set map = hash:/etc/postfix/popbsmtp/clients" in result.stdout
