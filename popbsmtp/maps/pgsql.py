"""``pgsql:FILE`` tables: one PostgreSQL table shared by several hosts.

FILE is the pgsql_table(5) file Postfix reads (``hosts``, ``user``,
``password``, ``dbname``, ``query``); the daemon connects with the same
parameters.  Each daemon owns the rows whose ``host`` column is its own
name, so a restart, flush or reconcile on one POP/IMAP host never touches
another's rows, and two hosts granting one address both keep a row: the
query accepts any unexpired one.  Every row carries its expiry and the query
compares it with ``now()``, so a daemon that died leaves nothing that
outlives its grants.

While the database is unreachable, writes fail with :class:`MapError`; the
keeper then backs off and reconciles: this host's rows are made equal to the
grant table (which the state file keeps), with each key's current expiry.
Nothing is queued twice or written stale, and no record of what was written
is needed: the reconcile reads the rows back and corrects them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from typing import Any, Collection, Dict, List, Mapping, Optional, Set, Tuple

from popbsmtp.errors import ConfigError, MapError
from popbsmtp.maps import MapSpec, MapWriter

TYPES = ("pgsql",)
log = logging.getLogger(__name__)

DEFAULT_TABLE = "popbsmtp_grants"
CONNECT_TIMEOUT = 5  # seconds; the keeper retries with back-off
STATEMENT_TIMEOUT_MS = 10_000
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_PARAM = re.compile(r"([a-z_][a-z0-9_]*)\s*=\s*(.*)")
# Extra parameters Postfix ignores: which host writes (default: the host name).
HOST_PARAM = "popbsmtp_host"
# ``popbsmtp_ipv6 = exact``: the query carries IPV6_GUARD (pgsql-init writes both).
IPV6_PARAM = "popbsmtp_ipv6"
# No answer for a key with ':' unless it has eight groups and no '::' (as
# policy.exact_ipv6_key): smtpd's partial keys never have eight, and a compressed
# key is the start of other addresses; such rows are for socketmap fronts only.
# On the row's column, not %s (equal there): Postfix's quoting plays no part.
IPV6_GUARD = (
    "(strpos(key, ':') = 0 OR (strpos(key, '::') = 0"
    " AND length(key) - length(replace(key, ':', '')) = 7))"
)
MAX_FILE = 64 * 1024
URI = "uri"  # conninfo()'s key for a postgresql:// URI in ``hosts``


def trigger_name(table: str) -> str:
    """The trigger (and its function) ``pgsql-init`` puts on ``table``: each changed row
    NOTIFYs the channel named like the table with its key (fronts, sources/pgsql.py)."""
    return f"{table}_notify"


def read_table_file(path: str) -> Dict[str, str]:
    """The ``name = value`` parameters of a pgsql_table(5) file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_FILE + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise MapError(f"cannot read {path}: {exc}") from None
    if len(text) > MAX_FILE:
        raise MapError(f"{path}: longer than {MAX_FILE} bytes")
    params: Dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _PARAM.fullmatch(line)
        if not match:
            raise MapError(f"{path}, line {number}: not 'name = value'")
        params[match.group(1)] = match.group(2).strip()
    return params


def ipv6_guarded(params: Mapping[str, str]) -> bool:
    """Whether the query never answers a compressed IPv6 key (nor a partial one).

    Both the marker and the guard itself must be there: the marker says
    pgsql-init wrote it, the text in the query is what PostgreSQL runs.
    """
    query = " ".join(params.get("query", "").split())
    return params.get(IPV6_PARAM) == "exact" and IPV6_GUARD in query


def reinit_command(path: str, params: Optional[Mapping[str, str]] = None) -> str:
    """The ``pgsql-init --force`` that rewrites FILE with the guarded query and
    keeps its table, answer and host name (a lost ``popbsmtp_host`` would hand
    this host's rows to another name).  ``params``: the file, when read already."""
    words = ["popbsmtp pgsql-init --dsn DSN"]
    try:
        params = read_table_file(path) if params is None else params
        table = table_name(params, path)
    except MapError:
        params, table = {}, DEFAULT_TABLE
    if table != DEFAULT_TABLE:
        words.append(f"--table {table}")
    value = re.match(r"\s*select\s+'([^'\s]+)'", params.get("query", ""), re.I)
    if value and value.group(1) != "OK":
        words.append(f"--value {value.group(1)}")
    if params.get(HOST_PARAM):
        words.append(f"--host-name {params[HOST_PARAM]}")
    return " ".join([*words, "--force", path])


def conninfo(params: Mapping[str, str], path: str) -> Dict[str, str]:
    """libpq connection parameters from pgsql_table(5) ``hosts``/``user``/...

    Every entry of ``hosts`` is kept, in order, as libpq's ``host`` and
    ``port`` lists: libpq tries them in turn, so the daemon, like Postfix,
    goes on writing when the first database server is down.
    """
    hosts = params.get("hosts", "").split()
    if not hosts or not params.get("dbname"):
        raise MapError(f"{path}: needs 'hosts' and 'dbname'")
    if any(h.startswith(("postgresql://", "postgres://")) for h in hosts):
        if len(hosts) > 1:
            raise MapError(
                f"{path}: a postgresql:// URI in 'hosts' must be its only entry"
                " (a URI lists several servers itself: postgresql://a,b/db)"
            )
        info = {URI: hosts[0]}  # libpq reads the rest from the URI
    else:
        pairs = [_host_port(entry) for entry in hosts]
        info = {"dbname": params["dbname"], "host": ",".join(h for h, _ in pairs)}
        if any(port for _, port in pairs):
            info["port"] = ",".join(port for _, port in pairs)  # empty: the default port
    for name in ("user", "password"):
        if params.get(name):
            info[name] = params[name]
    return info


def _host_port(entry: str) -> Tuple[str, str]:
    """(host or socket directory, port or "") of one ``hosts`` entry."""
    if entry.startswith("unix:"):
        return os.path.dirname(entry[5:]) or entry[5:], ""
    if entry.startswith("inet:"):
        entry = entry[5:]
    bracketed = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", entry)
    if bracketed:
        return bracketed.group(1), bracketed.group(2) or ""
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, port
    return entry, ""


def dsn(info: Mapping[str, str]) -> str:
    """One libpq connection string from :func:`conninfo`'s parameters."""
    from psycopg.conninfo import make_conninfo

    rest = {k: v for k, v in info.items() if k != URI}
    return make_conninfo(info.get(URI, ""), **rest)


def table_name(params: Mapping[str, str], path: str) -> str:
    """The table the query reads (``FROM name``), which the daemon writes."""
    match = re.search(r"\bfrom\s+([a-z_][a-z0-9_]*)", params.get("query", ""), re.I)
    if not match or not _NAME.fullmatch(match.group(1).lower()):
        raise MapError(f"{path}: no 'FROM table' in the query")
    return match.group(1).lower()


class Writer(MapWriter):
    """Upsert this host's rows with their expiries; delete withdrawn ones."""

    expiring = True
    partial_lookups = True  # smtpd asks SQL tables by partial keys as well

    @classmethod
    def partial_answers(cls, spec: MapSpec) -> bool:
        """Unless the file's query carries the IPv6 guard (an unreadable file: yes)."""
        try:
            return not ipv6_guarded(read_table_file(spec.path))
        except MapError:
            return True

    @classmethod
    def exact_ipv6_fix(cls, spec: MapSpec) -> str:
        try:
            params = read_table_file(spec.path)
        except MapError as exc:
            return f"whether its query is guarded is unknown: {exc}"
        return (
            f"the query in {spec.path} is not guarded: re-run popbsmtp pgsql-init --force"
            f" to get the guarded query ({reinit_command(spec.path, params)})"
        )

    writes_files = False

    _conn: Any = None

    @property
    def files(self) -> Collection[str]:
        return (self.spec.path,)

    def open(self) -> None:
        try:
            import psycopg  # noqa: F401 - checked here so a missing module is named
        except ImportError:
            raise ConfigError(
                "map = pgsql: needs the Python module psycopg (pip install 'popbsmtp[pgsql]')",
                key="map",
            ) from None
        params = read_table_file(self.spec.path)
        self._info = conninfo(params, self.spec.path)
        self.table = table_name(params, self.spec.path)
        self.host = params.get(HOST_PARAM) or socket.gethostname()
        self._expiries: Dict[str, float] = {}
        self._moved: Set[str] = set()

    def _connection(self) -> Any:
        import psycopg

        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            self._conn = psycopg.connect(
                dsn(self._info),
                connect_timeout=CONNECT_TIMEOUT,
                options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
                application_name="popbsmtp",
            )
        except psycopg.Error as exc:
            self._conn = None
            raise MapError(f"cannot connect to the database of {self.spec}: {exc}") from None
        return self._conn

    def _run(self, statements: List[Any]) -> List[Any]:
        """Run (sql, args) pairs in one transaction; a failure drops the connection.

        A connection the server closed while it was idle (a database restart)
        is only found out by using it: then the transaction is run once more
        on a new one (every statement here may run twice: upserts, deletes).
        """
        import psycopg

        reused = self._conn is not None and not self._conn.closed
        try:
            return self._transaction(statements)
        except psycopg.OperationalError as exc:
            self.close()
            if not reused:
                raise MapError(f"writing {self.spec} failed: {exc}") from None
        try:
            return self._transaction(statements)
        except psycopg.Error as exc:
            self.close()
            raise MapError(f"writing {self.spec} failed: {exc}") from None

    def _transaction(self, statements: List[Any]) -> List[Any]:
        import psycopg

        conn = self._connection()
        results: List[Any] = []
        try:
            with conn.transaction(), conn.cursor() as cur:
                for sql, args in statements:
                    cur.execute(sql, args)
                    results.append(cur.fetchall() if cur.description else None)
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            self.close()
            raise MapError(f"writing {self.spec} failed: {exc}") from None
        return results

    def _sql(self, text: str) -> Any:
        from psycopg import sql

        return sql.SQL(text).format(sql.Identifier(self.table))

    def retime(self, expiries: Mapping[str, float]) -> None:
        self._expiries.update(expiries)
        self._moved.update(expiries)

    def _upsert(self, keys: Collection[str]) -> Any:
        rows = [k for k in keys if k in self._expiries]
        sql = (
            "INSERT INTO {} (host, key, expires_at, written_at)"
            " SELECT %s, k, to_timestamp(e), now()"
            " FROM unnest(%s::text[], %s::float8[]) AS t(k, e)"
            " ON CONFLICT (host, key) DO UPDATE"
            " SET expires_at = excluded.expires_at, written_at = now()"
        )
        return (self._sql(sql), (self.host, rows, [self._expiries[k] for k in rows]))

    def apply(self, add: Collection[str], remove: Collection[str]) -> None:
        gone = set(remove)
        upsert = (set(add) | self._moved) - gone
        self._run(
            [
                self._upsert(upsert),
                (
                    self._sql("DELETE FROM {} WHERE host = %s AND key = ANY(%s::text[])"),
                    (self.host, sorted(gone)),
                ),
            ]
        )
        self._moved.clear()
        for key in gone:
            self._expiries.pop(key, None)

    def replace(self, keys: Collection[str]) -> None:
        wanted = sorted(keys)
        self._run(
            [
                (
                    self._sql("DELETE FROM {} WHERE host = %s AND NOT key = ANY(%s::text[])"),
                    (self.host, wanted),
                ),
                self._upsert(wanted),
            ]
        )
        self._moved.clear()
        self._expiries = {k: self._expiries[k] for k in wanted if k in self._expiries}

    def keys(self) -> Set[str]:
        (rows,) = self._run([(self._sql("SELECT key FROM {} WHERE host = %s"), (self.host,))])
        return {row[0] for row in rows}

    def close(self) -> None:
        # Rows stay unless empty() withdrew them (a clean stop): after a crash
        # or with the database away they still end at their expiry, in SQL.
        if self._conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                self._conn.close()
            self._conn = None
