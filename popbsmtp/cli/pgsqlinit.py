"""``popbsmtp pgsql-init``: create the shared table and the file Postfix reads.

It also (re)creates the trigger that notifies socketmap fronts of every
change; running it again on an existing table (``--force`` for the file)
leaves the rows alone.  The key is ``text``, not ``inet``: smtpd also looks up ``unknown``, which
``inet`` cannot parse (every client would then get a 451).  The query
compares the expiry with ``now()`` so rows of a dead daemon stop granting by
themselves, and ``LIMIT 1`` makes two hosts' rows for one address one answer.
The query never answers an IPv6 key unless it has all eight groups
(``IPV6_GUARD``, marked ``popbsmtp_ipv6 = exact``): smtpd also asks SQL
tables by partial keys, and a compressed key such as ``2001:db8::1`` is the
start of other addresses.  Such rows are then only for socketmap fronts,
which are asked for the full address, so the POP/IMAP hosts may write them.
"""

from __future__ import annotations

import grp
import os
import re
from typing import Dict, Optional

from popbsmtp.errors import PopbsmtpError
from popbsmtp.maps.pgsql import (
    DEFAULT_TABLE,
    HOST_PARAM,
    IPV6_GUARD,
    IPV6_PARAM,
    trigger_name,
)

_VALUE = re.compile(r"[^\s\0#]{1,200}")
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def schema(table: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {table} ("
        " host text NOT NULL,"
        " key text NOT NULL,"
        " expires_at timestamptz NOT NULL,"
        " written_at timestamptz NOT NULL DEFAULT now(),"
        " PRIMARY KEY (host, key));"
        f" CREATE INDEX IF NOT EXISTS {table}_key ON {table} (key, expires_at);"
        f" CREATE INDEX IF NOT EXISTS {table}_expires ON {table} (expires_at);"
    )


def notify_trigger(table: str) -> str:
    """Each changed row NOTIFYs channel ``table`` with its key; TRUNCATE with no key.

    Socketmap fronts (``grants_from = pgsql:``) LISTEN there, so a login or a
    withdrawal on any POP/IMAP host reaches them at once.  Replaced, never
    duplicated, when run again on an existing table.
    """
    name = trigger_name(table)
    return (
        f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN"
        " IF TG_OP = 'TRUNCATE' THEN PERFORM pg_notify(TG_TABLE_NAME, ''); RETURN NULL; END IF;"
        " IF TG_OP <> 'INSERT' THEN PERFORM pg_notify(TG_TABLE_NAME, OLD.key); END IF;"
        " IF TG_OP <> 'DELETE' THEN PERFORM pg_notify(TG_TABLE_NAME, NEW.key); END IF;"
        " RETURN NULL;"
        " END $$;"
        f" DROP TRIGGER IF EXISTS {name} ON {table};"
        f" CREATE TRIGGER {name} AFTER INSERT OR UPDATE OR DELETE ON {table}"
        f" FOR EACH ROW EXECUTE FUNCTION {name}();"
        f" DROP TRIGGER IF EXISTS {name}_truncate ON {table};"
        f" CREATE TRIGGER {name}_truncate AFTER TRUNCATE ON {table}"
        f" FOR EACH STATEMENT EXECUTE FUNCTION {name}();"
    )


def query(table: str, value: str = "OK") -> str:
    # For Postfix, which expands %s itself; table and value are checked words.
    return (
        f"SELECT '{value}' FROM {table} WHERE key = '%s' AND expires_at > now()"  # noqa: S608
        f" AND {IPV6_GUARD} LIMIT 1"
    )


def table_file(dsn: Dict[str, str], table: str, value: str, host: Optional[str]) -> str:
    """pgsql_table(5) text for libpq parameters ``dsn``."""
    where = dsn.get("host") or "localhost"
    if where.startswith("/"):
        hosts = f"unix:{where}/.s.PGSQL.{dsn.get('port') or '5432'}"
    else:
        hosts = f"inet:{where}:{dsn.get('port') or '5432'}"
    lines = [
        "# Written by popbsmtp pgsql-init: Postfix's pgsql_table(5) and popbsmtp read it.",
        f"hosts = {hosts}",
        f"dbname = {dsn.get('dbname') or dsn.get('user') or 'postgres'}",
    ]
    for name in ("user", "password"):
        if dsn.get(name):
            lines.append(f"{name} = {dsn[name]}")
    lines.append(f"query = {query(table, value)}")
    lines.append("# The query never answers a compressed IPv6 key (Postfix ignores this line).")
    lines.append(f"{IPV6_PARAM} = exact")
    if host:
        lines.append("# Which host's rows this popbsmtp writes (Postfix ignores it).")
        lines.append(f"{HOST_PARAM} = {host}")
    return "\n".join(lines) + "\n"


def _postfix_group(fd: int) -> None:
    """Group postfix (smtpd reads the file; it may hold a password: not for others)."""
    try:
        gid = grp.getgrnam("postfix").gr_gid
    except KeyError:
        return
    if os.geteuid() == 0:
        os.fchown(fd, -1, gid)


def run(
    dsn: str,
    path: str,
    table: str = DEFAULT_TABLE,
    value: str = "OK",
    host: Optional[str] = None,
    force: bool = False,
) -> None:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    if not _NAME.fullmatch(table):
        raise PopbsmtpError(f"--table {table!r}: use lower-case letters, digits and _")
    if not _VALUE.fullmatch(value) or "'" in value:
        raise PopbsmtpError(f"--value {value!r}: one word without quotes")
    if host is not None and not _VALUE.fullmatch(host):
        raise PopbsmtpError(f"--host-name {host!r}: one word")
    if os.path.lexists(path) and not force:
        raise PopbsmtpError(f"{path} exists; use --force to overwrite it")
    try:
        params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    except psycopg.Error as exc:
        raise PopbsmtpError(f"--dsn: {exc}") from None
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:  # one transaction
            conn.execute(schema(table).encode())
            conn.execute(notify_trigger(table).encode())
    except psycopg.Error as exc:
        raise PopbsmtpError(f"cannot create table {table}: {exc}") from None
    text = table_file(params, table, value, host)
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    try:
        _postfix_group(fd)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
