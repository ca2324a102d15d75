"""A front's source: the shared PostgreSQL table, followed with LISTEN/NOTIFY and polling.

``grants_from = pgsql:FILE`` reads the pgsql_table(5) file the POP/IMAP
hosts write through (maps/pgsql.py).  One thread owns one connection: it
listens on the table's channel *before* reading every unexpired row, so no
change falls between the two; each notification names a key, which is then
read again (coalesced: every key that arrived meanwhile in one query); a
heartbeat every quarter of ``stale_after`` proves the connection alive, and
a full re-read every :data:`RESYNC` seconds is the safety net.  Without the
trigger ``pgsql-init`` installs, no notification comes, so each heartbeat
is a full re-read instead.  A slow or dead database only delays this
thread: the socket is answered by another, from what was published, and the
mirror's deadline turns its answers to TEMP.  It only ever reads.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, Optional, Set

from popbsmtp.errors import MapError
from popbsmtp.grants.mirror import Mirror
from popbsmtp.maps.pgsql import (
    CONNECT_TIMEOUT,
    conninfo,
    dsn,
    read_table_file,
    table_name,
    trigger_name,
)

log = logging.getLogger(__name__)

RESYNC = 60.0  # seconds between full re-reads while notifications flow
MAX_BACKOFF = 5.0  # seconds between reconnection attempts, at most
# More keys than this in one batch of notifications: one full read is cheaper.
MAX_PARTIAL = 5000
STATEMENT_TIMEOUT_MS = 5000
# A dead peer on TCP (no RST) ends a blocked read within seconds, not hours.
KEEPALIVE = {
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
}

_ROWS = (
    "SELECT key, extract(epoch FROM max(expires_at))::float8 FROM {}"
    " WHERE expires_at > now(){} GROUP BY key"
)
_TRIGGER = (
    "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass(%s)"
    " AND tgname = %s AND tgenabled <> 'D'"
)


class GrantFeed:
    """Keep ``mirror`` equal to the table's unexpired rows, from its own thread."""

    def __init__(self, path: str, mirror: Mirror, monotonic: Callable[[], float] = time.monotonic):
        params = read_table_file(path)
        self.path = path
        self.info = conninfo(params, path)
        self.table = table_name(params, path)
        self.mirror = mirror
        self.monotonic = monotonic
        self.heartbeat = max(0.1, mirror.stale_after / 4)
        self.notifying = False  # the trigger is there: notifications carry the changes
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pgsql-feed", daemon=True)

    def describe(self) -> str:
        return f"pgsql:{self.path} (table {self.table})"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * self.heartbeat + 1)

    def _run(self) -> None:
        try:
            self._follow_forever()
        except Exception:  # a bug: fail closed (the deadline passes), but say why
            log.exception("the database feed stopped; lookups get TEMP from now on")

    def _follow_forever(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                conn = self._connect()
            except MapError as exc:
                self._failed(str(exc))
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            try:
                self._follow(conn)
            except Exception as exc:  # psycopg.Error, OSError: the connection is gone
                self._failed(f"reading {self.describe()} failed: {exc}".strip())
            finally:
                self.mirror.lost()
                _close(conn)
            backoff = 0.2
            self._stop.wait(backoff)

    def _connect(self) -> Any:
        import psycopg
        from psycopg import sql

        tcp = not self.info.get("host", "/").startswith("/")
        try:
            conn = psycopg.connect(
                dsn({**self.info, **KEEPALIVE} if tcp else self.info),
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT,
                options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
                application_name="popbsmtp-front",
            )
        except psycopg.Error as exc:
            raise MapError(f"cannot connect to the database of {self.describe()}: {exc}") from None
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.table)))
        except psycopg.Error as exc:
            _close(conn)
            raise MapError(f"cannot LISTEN on {self.table}: {exc}") from None
        return conn

    def _follow(self, conn: Any) -> None:
        """Full read, then notifications and heartbeats until stopped or broken."""
        self._check_trigger(conn)
        self._load(conn)
        if self.last_error:
            log.info("reading %s again; %d clients", self.describe(), len(self.mirror.expiries))
            self.last_error = ""
        beat = resync = self.monotonic()
        while not self._stop.is_set():
            keys: Set[str] = set()
            everything = False
            for note in conn.notifies(timeout=self.heartbeat, stop_after=1):
                everything |= _collect(note.payload, keys)
            if keys or everything:
                for note in conn.notifies(timeout=0.0):  # what else has arrived: one query
                    everything |= _collect(note.payload, keys)
            now = self.monotonic()
            if now - resync >= RESYNC or (not self.notifying and now - beat >= self.heartbeat):
                everything = True
            if everything or len(keys) > MAX_PARTIAL:
                self._check_trigger(conn)
                self._load(conn)
                beat = resync = now
            elif keys:
                self._reread(conn, keys)
                beat = now
            elif now - beat >= self.heartbeat:
                asked = self.monotonic()
                self._check_trigger(conn)
                self.mirror.confirm(asked)
                beat = now

    def _query(self, conn: Any, where: str = "", args: Any = None) -> Dict[str, float]:
        from psycopg import sql

        text = sql.SQL(_ROWS.format("{}", where)).format(sql.Identifier(self.table))
        rows = conn.execute(text, args).fetchall()
        return {str(key): float(expiry) for key, expiry in rows}

    def _load(self, conn: Any) -> None:
        asked = self.monotonic()
        self.mirror.load(self._query(conn), asked)

    def _reread(self, conn: Any, keys: Set[str]) -> None:
        asked = self.monotonic()
        rows = self._query(conn, " AND key = ANY(%s::text[])", (sorted(keys),))
        self.mirror.update(keys, rows, asked)

    def _check_trigger(self, conn: Any) -> None:
        (count,) = conn.execute(_TRIGGER, (self.table, trigger_name(self.table))).fetchone()
        notifying = bool(count)
        if notifying != self.notifying:
            if notifying:
                log.info("%s notifies its changes: following them as they come", self.table)
            else:
                log.warning(
                    "table %s has no trigger %s: reading every row each %gs instead of "
                    "following changes (run popbsmtp pgsql-init --force to add it)",
                    self.table,
                    trigger_name(self.table),
                    self.heartbeat,
                )
            self.notifying = notifying

    def _failed(self, message: str) -> None:
        if message != self.last_error:
            log.error(
                "%s; lookups get TEMP once the mirror is %gs old (retrying)",
                message,
                self.mirror.stale_after,
            )
        self.last_error = message

    def statistics(self) -> Dict[str, object]:
        return {
            **self.mirror.statistics(),
            "notifying": self.notifying,
            "last_error": self.last_error,
        }


def _collect(payload: str, keys: Set[str]) -> bool:
    """Add a notification's key; True when it names none (read everything again)."""
    if not payload or len(payload) > 200 or not payload.isprintable():
        return True
    keys.add(payload)
    return False


def _close(conn: Optional[Any]) -> None:
    try:
        if conn is not None:
            conn.close()
    except Exception:  # noqa: S110 - closing a broken connection
        pass
