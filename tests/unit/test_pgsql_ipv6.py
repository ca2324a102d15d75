"""The IPv6 guard of a pgsql: table's query decides whether compressed keys go in.

The table's own file decides (``popbsmtp_ipv6 = exact`` and the guard in the
query): a guarded table takes ``2001:db8::1`` (only socketmap fronts answer
it), an old file keeps the refusal and names the ``pgsql-init --force`` that
fixes it.  What PostgreSQL and smtpd make of the query is tested for real in
tests/integration/test_pgsql_front.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import netaddr

from popbsmtp.cli.pgsqlinit import table_file
from popbsmtp.doctor.pgsql import check_ipv6
from popbsmtp.grants import GrantTable
from popbsmtp.maps import MapSpec, exact_ipv6_fix, partial_lookups
from popbsmtp.maps.pgsql import IPV6_GUARD, ipv6_guarded, read_table_file
from popbsmtp.parse.addresses import IgnoredNetworks
from popbsmtp.parse.matcher import Login
from popbsmtp.policy import GRANT, REFUSE, Policy, ipv6_exact_only, ipv6_refusal

DSN = {"host": "db.example", "dbname": "mail", "user": "pbs"}
OLD_QUERY = "SELECT 'OK' FROM popbsmtp_grants WHERE key = '%s' AND expires_at > now() LIMIT 1"


def _guarded_file(tmp_path, host="pop-a"):
    path = tmp_path / "pgsql.cf"
    path.write_text(table_file(DSN, "popbsmtp_grants", "OK", host))
    return path


def _old_file(tmp_path):
    path = tmp_path / "old.cf"
    path.write_text(
        f"hosts = inet:db.example:5432\ndbname = mail\nquery = {OLD_QUERY}\npopbsmtp_host = pop-b\n"
    )
    return path


def _decide(spec: MapSpec, ip: str, scope: str = "exact"):
    settings = SimpleNamespace(ipv6_scope=scope, map=spec)
    policy = Policy(
        3600,
        3600,
        IgnoredNetworks(netaddr.IPSet(), "none"),
        ipv6_exact_only=ipv6_exact_only(settings),
        ipv6_fix=exact_ipv6_fix(spec),
    )
    login = Login(time=1000.0, ip=ip, raw_ip=ip, profile="dovecot", rule="login", event="login")
    return policy.decide(login, 1000.0, GrantTable())


def test_pgsql_init_writes_a_recognised_guard(tmp_path):
    path = _guarded_file(tmp_path)
    params = read_table_file(str(path))
    assert params["popbsmtp_ipv6"] == "exact" and IPV6_GUARD in params["query"]
    assert ipv6_guarded(params)
    spec = MapSpec("pgsql", str(path))
    assert not partial_lookups(spec)
    assert [d.kind for d in _decide(spec, "2001:db8::1")] == [GRANT]
    assert check_ipv6(spec, "exact")[0] == "OK"


def test_both_marker_and_guard_are_needed(tmp_path):
    text = table_file(DSN, "popbsmtp_grants", "OK", None)
    path = tmp_path / "f.cf"
    path.write_text(text.replace("popbsmtp_ipv6 = exact\n", ""))
    assert partial_lookups(MapSpec("pgsql", str(path)))
    path.write_text(text.replace(IPV6_GUARD, "true"))
    assert partial_lookups(MapSpec("pgsql", str(path)))
    path.write_text(text.replace("popbsmtp_ipv6 = exact", "popbsmtp_ipv6 = neighbours"))
    assert partial_lookups(MapSpec("pgsql", str(path)))
    # Runs of blanks in the query are one blank to SQL.
    path.write_text(text.replace(" AND (strpos", "  AND\t(strpos"))
    assert not partial_lookups(MapSpec("pgsql", str(path)))


def test_old_file_keeps_the_refusal_and_names_the_fix(tmp_path):
    spec = MapSpec("pgsql", str(_old_file(tmp_path)))
    assert partial_lookups(spec)
    (decision,) = _decide(spec, "2001:db8::1")
    assert decision.kind == REFUSE
    assert "IPv6 key 2001:db8::1 is not written out in full" in decision.reason
    assert "re-run popbsmtp pgsql-init --force to get the guarded query" in decision.reason
    assert f"--host-name pop-b --force {spec.path}" in decision.reason
    assert [d.kind for d in _decide(spec, "2001:db8:1:2:3:4:5:6")] == [GRANT]
    assert [d.kind for d in _decide(spec, "192.0.2.1")] == [GRANT]
    assert [d.kind for d in _decide(spec, "2001:db8::1", "neighbours")] == [GRANT]
    level, subject, why, fix = check_ipv6(spec, "exact")
    assert (level, subject) == ("WARNING", "ipv6") and "is not guarded" in why
    assert fix.startswith("re-run popbsmtp pgsql-init --dsn DSN --host-name pop-b --force")
    refused = ipv6_refusal(
        "2001:db8::7",
        ipv6_exact_only(SimpleNamespace(ipv6_scope="exact", map=spec)),
        exact_ipv6_fix(spec),
    )
    assert refused and "pgsql-init --force" in refused


def test_other_tables_keep_their_fix(tmp_path):
    lmdb = MapSpec("lmdb", str(tmp_path / "pbs"))
    assert partial_lookups(lmdb) and "socketmap" in exact_ipv6_fix(lmdb)
    assert not partial_lookups(MapSpec("socketmap", "unix:/run/x:popbsmtp"))
    missing = MapSpec("pgsql", str(tmp_path / "missing.cf"))
    assert partial_lookups(missing)  # an unreadable file is not guarded
    assert "whether its query is guarded is unknown: cannot read" in exact_ipv6_fix(missing)
