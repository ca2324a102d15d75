from popbsmtp.addresses import IgnoredNetworks, parse_networks
from popbsmtp.grants import GrantTable, refusal
from popbsmtp.matcher import Login


def login(ip, t=1000.0, raw=None):
    return Login(time=t, ip=ip, raw_ip=raw or ip, profile="dovecot", rule="login", event="login")


def test_grant_expire_and_changes():
    table = GrantTable()
    assert table.grant("192.0.2.1", 100.0, "p", "r")
    assert table.grant("192.0.2.2", 50.0, "p", "r")
    assert table.take_changes() == ({"192.0.2.1", "192.0.2.2"}, set())
    assert table.next_expiry() == 50.0
    assert table.expire(49.9) == []
    assert table.expire(50.0) == ["192.0.2.2"]
    assert table.take_changes() == (set(), {"192.0.2.2"})
    assert table.next_expiry() == 100.0


def test_repeat_login_extends_but_never_shortens():
    table = GrantTable()
    table.grant("192.0.2.1", 100.0, "p", "r")
    table.grant("192.0.2.1", 200.0, "p", "r")
    table.grant("192.0.2.1", 150.0, "p", "r")
    assert table.get("192.0.2.1").expires == 200.0
    assert table.expire(100.0) == []  # the stale heap entry does not expire it
    assert table.next_expiry() == 200.0
    assert table.expire(200.0) == ["192.0.2.1"]


def test_add_then_remove_in_one_batch_nets_out():
    table = GrantTable()
    table.grant("192.0.2.1", 100.0, "p", "r")
    table.remove("192.0.2.1")
    assert table.take_changes() == (set(), {"192.0.2.1"})


def test_full_table_refuses_new_grants_but_refreshes_old():
    table = GrantTable(max_entries=2)
    assert table.grant("192.0.2.1", 100.0, "p", "r")
    assert table.grant("192.0.2.2", 100.0, "p", "r")
    assert not table.grant("192.0.2.3", 100.0, "p", "r")
    assert table.grant("192.0.2.1", 300.0, "p", "r")
    assert len(table) == 2 and table.refused_full == 1


def test_refusal_reasons():
    none = IgnoredNetworks.none()
    assert refusal(login("192.0.2.1"), now=1000.0, grace=60, ignored=none) is None
    assert refusal(login("192.0.2.1", t=900.0), 1000.0, 60, none) == "too old"
    assert refusal(login("192.0.2.1", t=940.0), 1000.0, 60, none) == "too old"
    nets = parse_networks("192.0.2.0/24")
    assert refusal(login("192.0.2.1"), 1000.0, 60, nets) == "ignored network"
    bad = Login(1000.0, None, "0.0.0.0", "p", "r", "login", invalid="unspecified")
    assert refusal(bad, 1000.0, 60, none).startswith("invalid address '0.0.0.0'")
