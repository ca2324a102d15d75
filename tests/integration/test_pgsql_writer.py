"""The pgsql writer against a real PostgreSQL: expiries, own rows, outages."""

from __future__ import annotations

import time

import pytest
from pg_server import started
from postfix_instance import free_port, postmap_query
from support import popbsmtp, postfix_dir

from popbsmtp.errors import MapError
from popbsmtp.maps import MapSpec
from popbsmtp.maps.pgsql import Writer, conninfo, dsn


def _writer(tmp, dsn, host):
    path = tmp / f"{host}.cf"
    popbsmtp("pgsql-init", "--dsn", dsn, "--host-name", host, str(path))
    writer = Writer(MapSpec("pgsql", str(path)), "OK")
    writer.open()
    return writer


def _expiries(pg, host):
    rows = pg.sql(
        "SELECT key, extract(epoch FROM expires_at) FROM popbsmtp_grants"
        f" WHERE host = '{host}' ORDER BY key"
    )
    return {key: float(when) for key, when in rows}


def test_expiries_own_rows_and_an_outage(pf_tmp):
    pg = started(pf_tmp)
    a = b = None
    try:
        a, b = _writer(pf_tmp, pg.dsn, "a"), _writer(pf_tmp, pg.dsn, "b")
        now = time.time()
        a.retime({"192.0.2.1": now + 60, "192.0.2.2": now + 60})
        a.apply(["192.0.2.1", "192.0.2.2"], [])
        b.retime({"192.0.2.1": now + 600})
        b.apply(["192.0.2.1"], [])
        assert _expiries(pg, "a") == pytest.approx({"192.0.2.1": now + 60, "192.0.2.2": now + 60})
        # An extension changes no key, only the expiry: it is written all the same.
        a.retime({"192.0.2.2": now + 900})
        a.apply([], [])
        assert _expiries(pg, "a")["192.0.2.2"] == pytest.approx(now + 900)
        # A reconcile (replace) and a withdrawal touch only this host's rows.
        a.replace(["192.0.2.2"])
        assert set(_expiries(pg, "a")) == {"192.0.2.2"}
        assert _expiries(pg, "b") == pytest.approx({"192.0.2.1": now + 600})
        assert a.keys() == {"192.0.2.2"} and b.keys() == {"192.0.2.1"}
        # Several servers in 'hosts', the first one down: the writer, like
        # Postfix, goes on to the next.
        c_path = pf_tmp / "c.cf"
        popbsmtp("pgsql-init", "--dsn", pg.dsn, "--host-name", "c", str(c_path))
        real = f"hosts = inet:127.0.0.1:{pg.port}"
        assert real in c_path.read_text()
        both = f"hosts = inet:127.0.0.1:{free_port()} inet:127.0.0.1:{pg.port}"
        c_path.write_text(c_path.read_text().replace(real, both))
        c = Writer(MapSpec("pgsql", str(c_path)), "OK")
        c.open()
        try:
            c.retime({"192.0.2.9": now + 60})
            c.apply(["192.0.2.9"], [])
        finally:
            c.close()
        assert set(_expiries(pg, "c")) == {"192.0.2.9"}
        assert postmap_query("192.0.2.9", f"pgsql:{c_path}", str(postfix_dir())) == "OK"
        # The database goes away: a write fails with MapError (the keeper retries).
        pg.stop()
        a.retime({"192.0.2.3": now + 60})
        with pytest.raises(MapError, match="cannot connect|failed"):
            a.apply(["192.0.2.3"], ["192.0.2.2"])
        pg.start()
        a.retime({"192.0.2.3": now + 60})  # what the keeper's reconcile does
        a.replace(["192.0.2.3"])
        assert _expiries(pg, "a") == pytest.approx({"192.0.2.3": now + 60})
        assert _expiries(pg, "b") == pytest.approx({"192.0.2.1": now + 600})
        # b's idle connection was cut by the restart: its next write is run
        # again on a new connection instead of failing (a clean stop's
        # withdrawal after a database restart relies on it).
        b.retime({"192.0.2.4": now + 60})
        b.apply(["192.0.2.4"], [])
        assert set(_expiries(pg, "b")) == {"192.0.2.1", "192.0.2.4"}
    finally:
        for writer in (a, b):
            if writer is not None:
                writer.close()
        pg.stop()


def test_a_uri_in_hosts_becomes_one_connection_string(tmp_path):
    from psycopg.conninfo import conninfo_to_dict

    uri = "postgresql://pbs@db.example:5433/mail"
    info = conninfo({"hosts": uri, "dbname": "mail", "password": "s"}, str(tmp_path / "f.cf"))
    assert conninfo_to_dict(dsn(info)) == {
        "user": "pbs",
        "dbname": "mail",
        "host": "db.example",
        "port": "5433",
        "password": "s",
    }
