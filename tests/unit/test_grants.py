import random

from popbsmtp.grants import BUCKET, REBUILD_SLACK, GrantTable
from popbsmtp.parse.addresses import IgnoredNetworks, parse_networks
from popbsmtp.parse.matcher import Login
from popbsmtp.policy import refusal


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
    assert refusal(login("192.0.2.1"), now=1000.0, window=60, ignored=none) is None
    assert refusal(login("192.0.2.1", t=900.0), 1000.0, 60, none) == "too old"
    assert refusal(login("192.0.2.1", t=940.0), 1000.0, 60, none) == "too old"
    nets = parse_networks("192.0.2.0/24")
    assert refusal(login("192.0.2.1"), 1000.0, 60, nets) == "ignored network"
    bad = Login(1000.0, None, "0.0.0.0", "p", "r", "login", invalid="unspecified")
    assert refusal(bad, 1000.0, 60, none).startswith("invalid address '0.0.0.0'")


# -- the expiry schedule (buckets of BUCKET seconds, an exact heap for the earliest) --


def _reference_expire(model, now):
    due = sorted((expires, ip) for ip, expires in model.items() if expires <= now)
    for _, ip in due:
        del model[ip]
    return [ip for _, ip in due]


def test_expiry_order_is_exact_across_buckets():
    table = GrantTable()
    times = [5.0, 0.5, BUCKET * 3 + 0.25, BUCKET - 0.001, BUCKET, 40.0, 0.5000001, BUCKET * 3]
    for n, expires in enumerate(times):
        table.grant(f"192.0.2.{n}", expires, "p", "r")
    assert table.next_expiry() == 0.5
    order = []
    for expires in sorted(times):
        assert table.next_expiry() == expires
        assert table.expire(expires - 1e-6) == []
        order += table.expire(expires)
    assert order == [f"192.0.2.{times.index(t)}" for t in sorted(times)]
    assert table.next_expiry() is None and len(table) == 0


def test_grant_into_the_bucket_already_due_is_still_exact():
    table = GrantTable()
    table.grant("192.0.2.1", 100.5, "p", "r")
    assert table.next_expiry() == 100.5  # its bucket is now the exact heap
    table.grant("192.0.2.2", 100.2, "p", "r")  # same bucket, earlier
    assert table.next_expiry() == 100.2
    assert table.expire(100.3) == ["192.0.2.2"]
    table.grant("192.0.2.1", 100.9, "p", "r")  # extended within the bucket
    assert table.expire(100.5) == []
    assert table.expire(100.9) == ["192.0.2.1"]


def test_shortened_grant_leaves_early_and_its_old_entry_is_ignored():
    table = GrantTable()
    table.grant("192.0.2.1", 1000.0, "p", "r")
    table.remove("192.0.2.1")
    table.grant("192.0.2.1", 10.0, "p", "r")  # how sessions shorten a hold
    assert table.next_expiry() == 10.0
    assert table.expire(10.0) == ["192.0.2.1"]
    table.grant("192.0.2.1", 500.0, "p", "r")
    assert table.expire(1000.0) == ["192.0.2.1"]  # once, at its own expiry
    assert table.next_expiry() is None


def test_clock_going_back_expires_nothing_early():
    table = GrantTable()
    table.grant("192.0.2.1", 100.0, "p", "r")
    table.grant("192.0.2.2", 200.0, "p", "r")
    assert table.expire(150.0) == ["192.0.2.1"]
    assert table.expire(20.0) == []  # the clock jumped back
    table.grant("192.0.2.3", 30.0, "p", "r")  # earlier than anything loaded so far
    assert table.next_expiry() == 30.0
    assert table.expire(30.0) == ["192.0.2.3"]
    assert table.expire(199.0) == [] and table.expire(200.0) == ["192.0.2.2"]


def test_non_finite_expiry_does_not_break_the_schedule():
    table = GrantTable()
    table.grant("192.0.2.1", float("inf"), "p", "r")
    table.grant("192.0.2.2", 5.0, "p", "r")
    assert table.expire(1e300) == ["192.0.2.2"]
    assert table.next_expiry() == float("inf") and "192.0.2.1" in table


def test_schedule_matches_a_reference_model():
    rnd = random.Random(7)
    for _ in range(200):
        table, model = GrantTable(max_entries=10**6), dict[str, float]()
        now = rnd.uniform(-50, 50)
        for _ in range(200):
            ip, op = f"192.0.2.{rnd.randrange(30)}", rnd.random()
            if op < 0.5:
                expires = now + rnd.choice([0.0, 0.5, BUCKET, BUCKET + 0.1, rnd.uniform(-5, 90)])
                table.grant(ip, expires, "p", "r")
                model[ip] = max(model.get(ip, expires), expires)
            elif op < 0.6:
                assert table.remove(ip) == (model.pop(ip, None) is not None)
            elif op < 0.9:
                now += rnd.choice([0.0, 0.3, 1.0, BUCKET, 60.0, -2.0, -40.0])
                assert table.expire(now) == _reference_expire(model, now)
            else:
                assert table.next_expiry() == (min(model.values()) if model else None)
            assert {g.ip: g.expires for g in table} == model


def test_iteration_copes_with_changes_and_rows_stream():
    table = GrantTable()
    for n in range(5):
        table.grant(f"192.0.2.{n}", 100.0 + n, "dovecot", "login")
    table.grant("192.0.2.9", 50.0, "manual", "add")
    seen = []
    for grant in table:  # what _cap_expiries does: remove and re-grant while iterating
        seen.append(grant.ip)
        table.remove(grant.ip)
        table.grant(grant.ip, 10.0, grant.profile, grant.rule)
        table.remove("192.0.2.4")  # removed before it is reached: skipped
    assert "192.0.2.4" not in seen and len(seen) == 5
    assert sorted(table.iter_rows()) == sorted(g.as_row() for g in table)
    assert ("192.0.2.9", 10.0, "manual", "add") in list(table.iter_rows())
    assert table.keys() == {g.ip for g in table}
    assert table.pending() == len(table.take_changes()[0]) + 1  # 192.0.2.4 removed


def test_stale_schedule_entries_are_bounded():
    table = GrantTable()
    table.grant("192.0.2.2", 1e9, "p", "r")
    for n in range(3 * REBUILD_SLACK):  # one client extended over and over
        table.grant("192.0.2.1", 1000.0 + n, "p", "r")
        assert table.scheduled() <= 2 * len(table) + REBUILD_SLACK
    assert table.next_expiry() == 1000.0 + 3 * REBUILD_SLACK - 1
    assert table.expire(1e6) == ["192.0.2.1"]
    assert table.expire(1e9) == ["192.0.2.2"] and table.scheduled() == 0
