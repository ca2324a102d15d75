"""doctor for a socketmap front (``grants_from = pgsql:FILE``): database, trigger, socket.

The database checks are the POP/IMAP hosts' (doctor/pgsql.py: connection,
columns, query); then whether the table notifies its changes (without the
trigger a front re-reads every row each heartbeat), and the socketmap checks
(doctor/socketmap.py), probing a client the database grants now: the front
must answer OK for it, directly and through ``postmap -q``.  Reads only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Tuple

from popbsmtp.config import Settings
from popbsmtp.doctor import pgsql, socketmap
from popbsmtp.errors import MapError
from popbsmtp.maps.pgsql import conninfo, dsn, read_table_file, table_name, trigger_name

if TYPE_CHECKING:
    from popbsmtp.doctor.findings import Finding

OK, WARNING, ERROR = "OK", "WARNING", "ERROR"


def check(settings: Settings, postfix_dir: str, types: Tuple[str, ...]) -> List[Finding]:
    from popbsmtp.doctor.findings import Finding

    path = settings.grants_from.partition(":")[2]
    found = [Finding(level, "pgsql", why, fix) for level, why, fix in pgsql.check(path)]
    if any(item.level == ERROR for item in found):
        return found
    level, why, key = _trigger_and_key(path)
    fix = f"popbsmtp pgsql-init --dsn DSN --force {path} (keeps the rows)"
    found.append(Finding(level, "pgsql trigger", why, fix if level != OK else ""))
    if "socketmap" not in types:
        why = "this Postfix cannot read socketmap: tables (postconf -m)"
        return [*found, Finding(ERROR, "map type", why, "install Postfix 2.10 or later")]
    keys = [key] if key else []
    return found + socketmap.check(
        settings.map, settings.state_dir, settings.map_group, postfix_dir, keys
    )


def _trigger_and_key(path: str) -> Tuple[str, str, Optional[str]]:
    """(level, detail, a key granted for a while yet or None)."""
    import psycopg

    try:
        params = read_table_file(path)
        table = table_name(params, path)
        with psycopg.connect(dsn(conninfo(params, path)), connect_timeout=5) as conn:
            (count,) = conn.execute(
                "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass(%s)"
                " AND tgname = %s AND tgenabled <> 'D'",
                (table, trigger_name(table)),
            ).fetchone() or (0,)
            row = conn.execute(
                f"SELECT key FROM {table} WHERE expires_at > now() + interval '10 seconds'"  # noqa: S608
                " ORDER BY expires_at DESC LIMIT 1"
            ).fetchone()
    except (MapError, psycopg.Error) as exc:
        return ERROR, f"cannot check the trigger: {exc}", None
    key = str(row[0]) if row else None
    if not count:
        why = (
            f"table {table} has no trigger {trigger_name(table)}: the front re-reads every row"
            " each heartbeat instead of following changes"
        )
        return WARNING, why, key
    return OK, f"table {table} notifies its changes (trigger {trigger_name(table)})", key
