"""pgsql_table(5) files: what pgsql-init writes is what the writer reads back.

No psycopg here: the RPM's %check runs the unit tests without it.
"""

from __future__ import annotations

import pytest

from popbsmtp.cli.pgsqlinit import query, table_file
from popbsmtp.errors import MapError
from popbsmtp.maps import MapSpec, partial_lookups, writes_files
from popbsmtp.maps.pgsql import HOST_PARAM, conninfo, read_table_file, table_name


def test_written_file_reads_back(tmp_path):
    dsn = {"host": "db.example", "port": "5433", "user": "pbs", "password": "s3", "dbname": "mail"}
    path = tmp_path / "pgsql.cf"
    path.write_text(table_file(dsn, "popbsmtp_grants", "OK", "pop-a"))
    params = read_table_file(str(path))
    assert params[HOST_PARAM] == "pop-a"
    assert params["hosts"] == "inet:db.example:5433"
    assert conninfo(params, str(path)) == dict(dsn)
    assert table_name(params, str(path)) == "popbsmtp_grants"
    assert "key = '%s' AND expires_at > now() AND (strpos(key" in params["query"]
    assert params["query"].endswith(") LIMIT 1")


def test_unix_socket_hosts(tmp_path):
    text = table_file({"host": "/run/postgresql", "dbname": "mail"}, "t", "OK", None)
    assert "hosts = unix:/run/postgresql/.s.PGSQL.5432" in text
    path = tmp_path / "f.cf"
    path.write_text(text)
    assert conninfo(read_table_file(str(path)), str(path))["host"] == "/run/postgresql"


def test_bad_files_name_file_and_line(tmp_path):
    path = tmp_path / "bad.cf"
    path.write_text("hosts = x\nthis is not a parameter\n")
    with pytest.raises(MapError, match=r"bad.cf, line 2"):
        read_table_file(str(path))
    path.write_text("hosts = x\ndbname = d\nquery = SELECT 1\n")
    with pytest.raises(MapError, match="no 'FROM table'"):
        table_name(read_table_file(str(path)), str(path))
    path.write_text("query = SELECT 'OK' FROM t\n")
    with pytest.raises(MapError, match="needs 'hosts' and 'dbname'"):
        conninfo(read_table_file(str(path)), str(path))


def test_query_and_registry():
    assert query("t", "RELAY").startswith("SELECT 'RELAY' FROM t WHERE key = '%s'")
    assert partial_lookups(MapSpec("pgsql", "/nonexistent/pgsql.cf"))  # unread: fail closed
    assert not writes_files("pgsql") and writes_files("lmdb")


def test_hosts_forms(tmp_path):
    path = str(tmp_path / "f.cf")
    for hosts, expected in [
        ("inet:[::1]:5433", {"host": "::1", "port": "5433"}),
        ("db.example", {"host": "db.example"}),
        ("db.example:6000 other:5432", {"host": "db.example,other", "port": "6000,5432"}),
        ("unix:/run/postgresql/.s.PGSQL.5432 db2", {"host": "/run/postgresql,db2"}),
        ("inet:[::1]:5433 db2", {"host": "::1,db2", "port": "5433,"}),
    ]:
        info = conninfo({"hosts": hosts, "dbname": "d", "user": "u"}, path)
        assert info == {"dbname": "d", "user": "u", **expected}, hosts


def test_a_uri_must_be_the_only_hosts_entry(tmp_path):
    path = str(tmp_path / "f.cf")
    uri = "postgresql://a,b/mail"
    assert conninfo({"hosts": uri, "dbname": "d"}, path) == {"uri": uri}
    with pytest.raises(MapError, match="URI in 'hosts' must be its only entry"):
        conninfo({"hosts": f"{uri} db2", "dbname": "d"}, path)
