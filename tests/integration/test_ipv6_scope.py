"""IPv6 on tables Postfix also searches by partial keys: a default configuration never
lets an address relay that did not log in.  A real smtpd, probed with XCLIENT."""

from __future__ import annotations

from pathlib import Path

from postfix_instance import PostfixInstance, postmap_query
from support import Daemon, append, dovecot_login, popbsmtp, wait_for, write_config

COMPRESSED = "2001:db8::1"  # also the start of 2001:db8::1:5, 2001:db8::1:ffff, ...
NEIGHBOURS = ("2001:db8::1:5", "2001:db8::1:ffff", "2001:db8::1:5:6:7")
FULL = "2001:db8:1:2:3:4:5:6"  # eight groups: no other address starts with it
IPV4 = "192.0.2.50"


def _start(tmp: Path, **options: str):
    table = f"lmdb:{tmp}/pbs"
    config = write_config(tmp, map=table, grace="1h", **options)
    daemon = Daemon(config).start()
    postfix = PostfixInstance(tmp / "postfix", table).start()
    return config, daemon, postfix, table


def test_default_never_lets_an_ipv6_neighbour_relay(pf_tmp):
    config, daemon, postfix, table = _start(pf_tmp)
    try:
        assert postfix.rcpt_as(COMPRESSED) == 554 and postfix.rcpt_as(FULL) == 554
        for ip in (COMPRESSED, FULL, IPV4):
            append(pf_tmp / "mail.log", dovecot_login(ip))
        wait_for(lambda: postfix.rcpt_as(IPV4) == 250, 10, 0.05, "the IPv4 client relays")
        wait_for(lambda: postfix.rcpt_as(FULL) == 250, 10, 0.05, "the full IPv6 key relays")
        daemon.wait_log(f"not granting {COMPRESSED}")
        assert "IPv6 key 2001:db8::1 is not written out in full" in daemon.log()
        assert postmap_query(COMPRESSED, table) is None
        assert postfix.rcpt_as(COMPRESSED) == 554
        for neighbour in NEIGHBOURS:
            assert postfix.rcpt_as(neighbour) == 554, neighbour
        assert postfix.rcpt_as("2001:db8:1:2:3:4:5:7") == 554  # the full key's neighbour
        added = popbsmtp("add", "2001:db8::7", "-c", str(config), check=False)
        assert added.returncode != 0 and "not added: IPv6 key 2001:db8::7" in added.stderr
        doctor = popbsmtp("doctor", "-c", str(config), check=False).stdout
        assert "OK       ipv6: lmdb: tables are also searched by partial keys" in doctor
    finally:
        postfix.stop()
        daemon.stop()


def test_neighbours_scope_is_the_admins_choice_and_covers_exactly_the_documented_set(pf_tmp):
    config, daemon, postfix, table = _start(pf_tmp, ipv6_scope="neighbours")
    try:
        assert "ipv6_scope = neighbours: an IPv6 grant of P::S also lets" in daemon.log()
        append(pf_tmp / "mail.log", dovecot_login(COMPRESSED))
        wait_for(lambda: postfix.rcpt_as(COMPRESSED) == 250, 10, 0.05, "the login relays")
        for neighbour in NEIGHBOURS:  # what docs/maps.md says one grant covers
            assert postfix.rcpt_as(neighbour) == 250, neighbour
        for other in ("2001:db8::2", "2001:db8::", "2001:db8::10"):
            assert postfix.rcpt_as(other) == 554, other
        doctor = popbsmtp("doctor", "-c", str(config), check=False).stdout
        assert "WARNING  ipv6: ipv6_scope = neighbours" in doctor
        append(pf_tmp / "mail.log", dovecot_login(IPV4))
        wait_for(lambda: postfix.rcpt_as(IPV4) == 250, 10, 0.05, "the IPv4 client relays")
        assert daemon.stop() == 0

        # Back to exact: the saved compressed grant must not come back into
        # the table (its neighbours would relay again); the IPv4 one does.
        config = write_config(pf_tmp, map=table, grace="1h", ipv6_scope="exact")
        daemon = Daemon(config).start()
        daemon.wait_log("1 saved grant(s) not restored: IPv6 key 2001:db8::1")
        assert postfix.rcpt_as(IPV4) == 250
        for ip in (COMPRESSED, *NEIGHBOURS):
            assert postfix.rcpt_as(ip) == 554, ip
        assert postmap_query(COMPRESSED, table) is None
    finally:
        postfix.stop()
        daemon.stop()
