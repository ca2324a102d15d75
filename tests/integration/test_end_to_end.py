"""A Dovecot login line becomes relay permission in a real Postfix smtpd, and expires."""

from __future__ import annotations

import random
import time

from postfix_instance import PostfixInstance, postmap_query
from support import Daemon, append, dovecot_login, noise, wait_for, write_config


def test_login_line_lets_client_relay_then_expires(pf_tmp):
    config = write_config(pf_tmp, grace="4s")
    logfile = pf_tmp / "mail.log"
    append(logfile, noise())
    client = f"127.0.0.{random.randint(2, 250)}"
    daemon = Daemon(config).start()
    try:
        with PostfixInstance(pf_tmp / "postfix", f"lmdb:{pf_tmp}/pbs") as postfix:
            assert postfix.rcpt_status(client) == 554

            appended = time.monotonic()
            append(logfile, dovecot_login(client))
            wait_for(
                lambda: postfix.rcpt_status(client) == 250,
                timeout=1.0,
                what=f"{client} accepted by smtpd",
            )
            assert time.monotonic() - appended < 1.0
            assert postfix.rcpt_status("127.0.0.1") == 250  # mynetworks, unaffected
            other = "127.0.0.251" if client != "127.0.0.251" else "127.0.0.252"
            assert postfix.rcpt_status(other) == 554

            wait_for(
                lambda: postfix.rcpt_status(client) == 554,
                timeout=7.0,
                interval=0.1,
                what=f"{client} rejected again after expiry",
            )
            assert postmap_query(client, f"lmdb:{pf_tmp}/pbs") is None
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log()
    assert "granted " + client in daemon.log()
    assert "expired " + client in daemon.log()
    assert "stopped" in daemon.log()


def test_ipv6_and_mapped_grants_use_smtpd_keys(pf_tmp):
    # Compressed IPv6 keys in an lmdb table reach their neighbours: the admin's choice.
    config = write_config(pf_tmp, ipv6_scope="neighbours")
    logfile = pf_tmp / "mail.log"
    with Daemon(config) as daemon:
        append(logfile, dovecot_login("2001:DB8:0:0::5"))
        append(logfile, dovecot_login("::ffff:192.0.2.77"))
        table = f"lmdb:{pf_tmp}/pbs"
        wait_for(lambda: postmap_query("2001:db8::5", table) == "OK", what="IPv6 key")
        wait_for(lambda: postmap_query("192.0.2.77", table) == "OK", what="mapped key")
        assert postmap_query("::ffff:192.0.2.77", table) is None
        assert postmap_query("2001:DB8::5", table) == "OK"  # Postfix folds case
        assert daemon.stop() == 0
