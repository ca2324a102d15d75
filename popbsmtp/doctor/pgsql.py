"""doctor's checks for ``map = pgsql:FILE``: the connection, the table, the query.

It connects with the parameters Postfix reads from FILE (so a wrong password
there shows up here too), checks that the table has the columns the daemon
writes (``key`` as text: smtpd also asks for ``unknown``), and that the query
compares the expiry with ``now()`` (otherwise a dead daemon's rows would grant
for ever).  The ``postmap -q`` probe is the generic one.  Its ``ipv6`` line
says whether the query is guarded against compressed IPv6 keys.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

from popbsmtp.errors import MapError
from popbsmtp.maps import MapSpec, partial_lookups
from popbsmtp.maps.pgsql import read_table_file, reinit_command, table_name

OK, WARNING, ERROR = "OK", "WARNING", "ERROR"
WANTED = {"host": "text", "key": "text", "expires_at": "timestamp with time zone"}


def check(path: str) -> List[Tuple[str, str, str]]:
    """(level, detail, fix) triples, each for the subject ``pgsql``."""
    try:
        import psycopg

        from popbsmtp.maps.pgsql import conninfo, dsn
    except ImportError:
        return [(ERROR, "the Python module psycopg is missing", "pip install 'popbsmtp[pgsql]'")]
    try:
        params = read_table_file(path)
        info = conninfo(params, path)
        table = table_name(params, path)
    except MapError as exc:
        return [(ERROR, str(exc), f"popbsmtp pgsql-init --dsn DSN --force {path}")]
    where = info.get("uri") or f"{info.get('host')}:{info.get('port', '5432')}/{info['dbname']}"
    try:
        with psycopg.connect(dsn(info), connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = %s",
                (table,),
            ).fetchall()
    except psycopg.Error as exc:
        why = f"cannot connect to {where} with the parameters in {path}: {exc}".strip()
        return [(ERROR, why, "start PostgreSQL, or correct hosts/user/password/dbname")]
    found: List[Tuple[str, str, str]] = [(OK, f"connected to {where} as in {path}", "")]
    columns: Dict[str, str] = {str(name): str(kind) for name, kind in rows}
    wrong = [f"{c} ({t})" for c, t in WANTED.items() if columns.get(c) != t]
    if wrong:
        why = f"table {table} lacks or mistypes {', '.join(wrong)}"
        found.append((ERROR, why, f"popbsmtp pgsql-init --dsn DSN --force {path}"))
    else:
        found.append((OK, f"table {table} has host, key (text) and expires_at (timestamptz)", ""))
    query = params.get("query", "")
    if "%s" not in query or "expires_at > now()" not in query.replace("  ", " "):
        why = "the query does not compare expires_at with now(): a dead daemon's rows never end"
        found.append((ERROR, why, f"popbsmtp pgsql-init --dsn DSN --force {path}"))
    else:
        found.append((OK, "the query takes only unexpired rows (expires_at > now())", ""))
    return found


def check_ipv6(spec: MapSpec, scope: str) -> Tuple[str, str, str, str]:
    """(level, subject, detail, fix): is the query guarded against compressed IPv6 keys?"""
    if not partial_lookups(spec):
        why = (
            f"the query in {spec.path} answers IPv4 keys and IPv6 keys of all eight groups"
            " only (popbsmtp_ipv6 = exact): IPv6 logins are written for socketmap fronts,"
            " never found by smtpd's partial-key lookups"
        )
        return (OK, "ipv6", why, "")
    what = (
        "with ipv6_scope = neighbours its neighbours relay too"
        if scope == "neighbours"
        else "IPv6 logins not written out in full are refused"
    )
    why = (
        f"the query in {spec.path} is not guarded: smtpd's partial-key lookups would find"
        f" a compressed IPv6 key such as 2001:db8::1 for 2001:db8::1:5 too, so {what}"
    )
    return (WARNING, "ipv6", why, f"re-run {reinit_command(spec.path)} to get the guarded query")
