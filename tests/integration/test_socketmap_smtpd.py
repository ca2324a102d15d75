"""``socketmap:`` against a real smtpd (XCLIENT for any client address) and real postmap -q.

The real ``popbsmtp run`` answers the lookups.  Proves: login → relay for
IPv4 and IPv6, refusal once the grant expired, an IPv6 grant covers one
address only, and with the daemon stopped the documented restriction order
defers relaying (4xx) while mail to a local domain is still accepted.
"""

from __future__ import annotations

import os
import signal
import stat

import pytest
from postfix_instance import PostfixInstance, free_port, postmap_query
from support import Daemon, append, dovecot_login, noise, popbsmtp, wait_for, write_config

V4 = "198.51.100.7"
V6 = "2001:db8::1"
V6_NEIGHBOUR = "2001:db8::1:5"
LOCAL = "root@localhost"
REMOTE = "user@remote.example"


def documented_order(table: str) -> str:
    """docs/maps.md: local mail is permitted before the socketmap is asked."""
    return (
        "permit_mynetworks, permit_sasl_authenticated, permit_auth_destination, "
        f"check_client_access {table}, reject_unauth_destination"
    )


# Local mail is delivered to root@localhost whatever this host's aliases are.
LOCAL_DELIVERY = "alias_maps =\nlocal_recipient_maps ="


def code(postfix: PostfixInstance, client: str, rcpt: str = REMOTE) -> int:
    return postfix.rcpt_as(client, rcpt)


def test_exact_grants_expire_and_a_stopped_daemon_defers_only_relaying(pf_tmp, sockdir):
    table = f"socketmap:unix:{sockdir}/socketmap:popbsmtp"
    config = write_config(pf_tmp, map=table, grace="4s")
    logfile = pf_tmp / "mail.log"
    append(logfile, noise())
    daemon = Daemon(config).start()
    restrictions = documented_order(table)
    with PostfixInstance(
        pf_tmp / "postfix", table, relay_restrictions=restrictions, extra=LOCAL_DELIVERY
    ) as postfix:
        try:
            info = os.lstat(sockdir / "socketmap")
            assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o660
            assert code(postfix, V4) == 554 and code(postfix, V6) == 554

            append(logfile, dovecot_login(V4) + dovecot_login(V6))
            wait_for(lambda: code(postfix, V4) == 250, timeout=2, what="IPv4 client relays")
            wait_for(lambda: code(postfix, V6) == 250, timeout=2, what="IPv6 client relays")
            # Exact: the neighbour whose file-table partial key would be V6 is refused.
            assert code(postfix, V6_NEIGHBOUR) == 554
            assert postmap_query(V4, table) == "OK"
            assert postmap_query(V6, table) == "OK"
            assert postmap_query(V6_NEIGHBOUR, table) is None
            assert postmap_query("unknown", table) is None

            wait_for(
                lambda: code(postfix, V4) == 554 and code(postfix, V6) == 554,
                timeout=10,
                interval=0.1,
                what="both refused after expiry",
            )
            append(logfile, dovecot_login(V4))
            wait_for(lambda: code(postfix, V4) == 250, timeout=2, what="IPv4 granted again")
        finally:
            status = daemon.stop()
        assert status == 0, daemon.log()
        assert not (sockdir / "socketmap").exists()  # fail closed: nobody answers now

        # Daemon down: relaying waits (4xx, the client retries), even for a
        # client that was granted; mail to a local domain still flows.
        assert 400 <= code(postfix, V4, REMOTE) < 500
        assert 400 <= code(postfix, "203.0.113.9", REMOTE) < 500
        assert 400 <= code(postfix, V6, REMOTE) < 500
        assert code(postfix, "203.0.113.9", LOCAL) == 250
        assert code(postfix, V6_NEIGHBOUR, LOCAL) == 250
    assert "expired " + V4 in daemon.log()


def test_check_before_permit_auth_destination_defers_local_mail_too(pf_tmp, sockdir):
    """Why the order matters: with the socketmap asked first, a stopped
    daemon also holds up mail for local users."""
    table = f"socketmap:unix:{sockdir}/socketmap:popbsmtp"
    naive = f"permit_mynetworks, check_client_access {table}, reject_unauth_destination"
    with PostfixInstance(
        pf_tmp / "postfix", table, relay_restrictions=naive, extra=LOCAL_DELIVERY
    ) as pf:
        assert 400 <= code(pf, "203.0.113.9", LOCAL) < 500
        assert 400 <= code(pf, "203.0.113.9", REMOTE) < 500


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_loopback_inet_socketmap_answers_postmap(pf_tmp, host):
    port = free_port(host)
    shown = f"[{host}]" if ":" in host else host
    table = f"socketmap:inet:{shown}:{port}:popbsmtp"
    config = write_config(pf_tmp, map=table, grace="60s")
    append(pf_tmp / "mail.log", noise())
    with Daemon(config) as daemon:
        append(pf_tmp / "mail.log", dovecot_login(V6))
        daemon.wait_log(f"granted {V6}")
        wait_for(lambda: postmap_query(V6, table) == "OK", timeout=2, what="postmap -q via inet")
        assert postmap_query(V6_NEIGHBOUR, table) is None
        assert postmap_query(V4, table) is None
        assert daemon.stop() == 0


def test_unsafe_socket_directory_stops_the_start(pf_tmp, sockdir):
    sockdir.chmod(0o755)
    config = write_config(pf_tmp, map=f"socketmap:unix:{sockdir}/socketmap:popbsmtp")
    result = popbsmtp("run", "--foreground", "--config", str(config), check=False)
    assert result.returncode == 78, result.stderr  # EX_CONFIG, as for a bad configuration
    assert f"socket directory {sockdir} has mode 0755" in result.stderr
    assert not (sockdir / "socketmap").exists()


def test_remote_address_refused_in_the_config(pf_tmp):
    config = write_config(pf_tmp, map="socketmap:inet:0.0.0.0:8461:popbsmtp")
    result = popbsmtp("check-config", "--config", str(config), check=False)
    assert result.returncode == 78, result.stderr
    assert "loopback" in result.stderr


def test_add_while_stopped_is_answered_once_the_daemon_runs(pf_tmp, sockdir):
    table = f"socketmap:unix:{sockdir}/socketmap:popbsmtp"
    config = write_config(pf_tmp, map=table)
    append(pf_tmp / "mail.log", noise())
    popbsmtp("add", V6, "--for", "5m", "--config", str(config))
    assert not (sockdir / "socketmap").exists()  # nothing serves while the daemon is down
    with Daemon(config) as daemon:
        assert postmap_query(V6, table) == "OK"
        assert postmap_query(V6_NEIGHBOUR, table) is None
        assert daemon.stop() == 0


def test_a_removed_socket_is_made_again(pf_tmp, sockdir):
    table = f"socketmap:unix:{sockdir}/socketmap:popbsmtp"
    config = write_config(pf_tmp, map=table, grace="5m", poll_interval="1s")
    append(pf_tmp / "mail.log", noise())
    with Daemon(config) as daemon:
        append(pf_tmp / "mail.log", dovecot_login(V4))
        wait_for(lambda: postmap_query(V4, table) == "OK", timeout=3, what="granted")
        os.unlink(sockdir / "socketmap")
        daemon.wait_log("vanished or was replaced", timeout=10)
        wait_for(lambda: (sockdir / "socketmap").exists(), timeout=5, what="socket again")
        assert postmap_query(V4, table) == "OK"
        assert daemon.stop() == 0


def test_a_killed_daemon_answers_nothing_and_a_restart_takes_the_socket_back(pf_tmp, sockdir):
    table = f"socketmap:unix:{sockdir}/socketmap:popbsmtp"
    config = write_config(pf_tmp, map=table, grace="5m")
    append(pf_tmp / "mail.log", noise())
    daemon = Daemon(config).start()
    append(pf_tmp / "mail.log", dovecot_login(V4))
    wait_for(lambda: postmap_query(V4, table) == "OK", timeout=3, what="granted")
    daemon.stop(signal.SIGKILL)
    assert (sockdir / "socketmap").exists()  # left behind, but nobody listens on it
    with pytest.raises(AssertionError, match="Connection refused"):
        postmap_query(V4, table)
    # A second daemon (another state_dir) must not steal a live socket.
    with Daemon(config) as again:
        (pf_tmp / "other").mkdir()
        other = write_config(pf_tmp / "other", map=table, logfile=pf_tmp / "mail.log")
        result = popbsmtp("run", "--foreground", "--config", str(other), check=False)
        assert result.returncode != 0 and "another server answers on" in result.stderr
        assert postmap_query(V4, table) == "OK"  # the saved grant, served again
        assert again.stop() == 0
