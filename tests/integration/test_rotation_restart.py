"""The real daemon across log rotation and restarts, checked with postmap -q."""

from __future__ import annotations

import os
import shutil
import signal

import pytest
from postfix_instance import postmap_query
from support import Daemon, append, dovecot_login, popbsmtp, wait_for, write_config


def granted(tmp, ip):
    return postmap_query(ip, f"lmdb:{tmp}/pbs") == "OK"


@pytest.mark.parametrize("method", ["rename", "copytruncate", "delete-recreate"])
def test_login_on_each_side_of_a_rotation(pf_tmp, method):
    log = pf_tmp / "mail.log"
    append(log, dovecot_login("192.0.2.1"))
    with Daemon(write_config(pf_tmp)) as daemon:
        wait_for(lambda: granted(pf_tmp, "192.0.2.1"), what="before rotation")
        append(log, dovecot_login("192.0.2.2"))  # maybe not read yet when rotation happens
        if method == "rename":
            os.rename(log, f"{log}.1")
            append(log, dovecot_login("192.0.2.3"))
        elif method == "copytruncate":
            shutil.copyfile(log, f"{log}.1")
            os.truncate(log, 0)
            append(log, dovecot_login("192.0.2.3"))
        else:
            os.unlink(log)
            wait_for(lambda: not log.exists(), what="log removed")
            append(log, dovecot_login("192.0.2.3"))
        for ip in ("192.0.2.2", "192.0.2.3"):
            wait_for(lambda ip=ip: granted(pf_tmp, ip), what=f"{ip} after {method}")
        assert daemon.stop() == 0
    assert daemon.log().count("granted 192.0.2.2") == 1


def test_restart_resumes_without_rereading_or_skipping(pf_tmp):
    log = pf_tmp / "mail.log"
    config = write_config(pf_tmp)
    with Daemon(config) as daemon:
        append(log, dovecot_login("192.0.2.10"))
        wait_for(lambda: granted(pf_tmp, "192.0.2.10"), what="first login")
        assert daemon.stop() == 0
    # While stopped: withdraw the first client, and more logins arrive.
    popbsmtp("remove", "192.0.2.10", "--config", str(config))
    assert not granted(pf_tmp, "192.0.2.10")
    append(log, dovecot_login("192.0.2.11"))
    with Daemon(config) as daemon:
        wait_for(lambda: granted(pf_tmp, "192.0.2.11"), what="login written while stopped")
        assert not granted(pf_tmp, "192.0.2.10"), "an old line was processed twice"
        assert daemon.stop() == 0


def test_kill_9_keeps_unexpired_grants_and_drops_expired(pf_tmp):
    log = pf_tmp / "mail.log"
    config = write_config(pf_tmp, grace="3s")
    daemon = Daemon(config).start()
    popbsmtp("add", "192.0.2.19", "--for", "1h", "--config", str(config))
    append(log, dovecot_login("192.0.2.20"))
    wait_for(lambda: granted(pf_tmp, "192.0.2.20"), what="granted")
    daemon.stop(signal.SIGKILL)
    # Nobody expires grants while the daemon is dead; the next start must.
    append(log, dovecot_login("192.0.2.21"))
    with Daemon(config) as again:
        wait_for(lambda: granted(pf_tmp, "192.0.2.21"), what="new login after kill -9")
        wait_for(lambda: not granted(pf_tmp, "192.0.2.20"), timeout=6, what="old grant expired")
        assert granted(pf_tmp, "192.0.2.19"), "an unexpired grant was lost"
        assert again.stop() == 0


def test_map_deleted_behind_our_back_is_rebuilt(pf_tmp):
    log = pf_tmp / "mail.log"
    with Daemon(write_config(pf_tmp)) as daemon:
        append(log, dovecot_login("192.0.2.30"))
        wait_for(lambda: granted(pf_tmp, "192.0.2.30"), what="granted")
        os.unlink(pf_tmp / "pbs.lmdb")
        wait_for(
            lambda: (pf_tmp / "pbs.lmdb").exists() and granted(pf_tmp, "192.0.2.30"),
            timeout=5,
            what="map rebuilt from the grant table",
        )
        assert daemon.stop() == 0
