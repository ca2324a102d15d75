"""``popbsmtp doctor`` with ``map = socketmap:…``: the socket, the daemon's answer,
``postmap -q`` through it, and the restriction order (real postconf/postmap)."""

from __future__ import annotations

from pathlib import Path

from postfix_instance import PostfixInstance
from support import Daemon, append, dovecot_login, noise, popbsmtp, wait_for, write_config

GRANTED = "2001:db8::7"


def doctor(config: Path, instance: PostfixInstance, *extra: str):
    return popbsmtp(
        "doctor", "--config", str(config), "--postfix-dir", str(instance.etc), *extra, check=False
    )


def test_doctor_sees_the_daemon_answer_then_not(pf_tmp, sockdir):
    table = f"socketmap:unix:{sockdir}/socketmap:popbsmtp"
    config = write_config(pf_tmp, map=table, grace="5m")
    append(pf_tmp / "mail.log", noise())
    relay = (
        f"permit_mynetworks, permit_auth_destination, check_client_access {table}, "
        "reject_unauth_destination"
    )
    instance = PostfixInstance(pf_tmp / "postfix", table, relay_restrictions=relay)
    instance.write_config()
    with Daemon(config) as daemon:
        append(pf_tmp / "mail.log", dovecot_login(GRANTED))
        daemon.wait_log(f"granted {GRANTED}")
        state = pf_tmp / "state" / "state.json"
        wait_for(
            lambda: state.exists() and GRANTED in state.read_text(), timeout=10, what="state saved"
        )
        result = doctor(config, instance)
        out = result.stdout
        assert "OK       socketmap socket:" in out and "mode 0660, group postfix only" in out
        assert "OK       socketmap daemon: answers on" in out
        assert f"OK       postmap -q: finds granted client {GRANTED} through {table}" in out
        assert "OK       socketmap order: permit_auth_destination comes first" in out
        assert "is in smtpd_relay_restrictions before the relay decision" in out
        listed = popbsmtp("list", "--read-map", "--config", str(config), check=False)
        assert GRANTED in listed.stdout and "in map, granted" in listed.stdout, listed
        assert daemon.stop() == 0
    result = doctor(config, instance)
    assert result.returncode == 1
    assert "ERROR    socketmap socket:" in result.stdout
    assert "ERROR    socketmap daemon: nobody answers" in result.stdout


def test_doctor_warns_when_local_mail_would_wait(pf_tmp, sockdir):
    table = f"socketmap:unix:{sockdir}/socketmap:popbsmtp"
    config = write_config(pf_tmp, map=table)
    append(pf_tmp / "mail.log", noise())
    relay = f"permit_mynetworks, check_client_access {table}, reject_unauth_destination"
    instance = PostfixInstance(pf_tmp / "postfix", table, relay_restrictions=relay)
    instance.write_config()
    with Daemon(config) as daemon:
        result = doctor(config, instance)
        assert "WARNING  socketmap order: check_client_access socketmap comes before" in (
            result.stdout
        )
        assert "OK       socketmap daemon: answers on" in result.stdout
        assert daemon.stop() == 0


def test_doctor_warns_that_a_chrooted_smtpd_cannot_reach_the_socket(pf_tmp, sockdir):
    """Debian's master.cf runs smtpd chrooted in the queue directory: a socket under
    /run is not there for it."""
    table = f"socketmap:unix:{sockdir}/socketmap:popbsmtp"
    config = write_config(pf_tmp, map=table)
    append(pf_tmp / "mail.log", noise())
    instance = PostfixInstance(pf_tmp / "postfix", table)
    instance.write_config()
    result = doctor(config, instance)
    assert "OK       socketmap chroot: no smtpd that asks it runs chrooted" in result.stdout
    master = instance.etc / "master.cf"
    lines = master.read_text().splitlines()
    lines[0] = lines[0].replace(" inet n - n ", " inet n - y ")  # the smtpd line, as Debian's
    master.write_text("\n".join(lines) + "\n")
    result = doctor(config, instance)
    [line] = [x for x in result.stdout.splitlines() if "socketmap chroot" in x]
    assert line.startswith("WARNING") and "chroot = y" in line and str(sockdir) in line, line
    assert "socketmap:inet:127.0.0.1:PORT:popbsmtp" in result.stdout
