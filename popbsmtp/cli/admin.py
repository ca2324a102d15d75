"""What ``popbsmtp add/remove/flush/list/withdraw`` do, with or without a running daemon.

If the daemon holds the state lock, a request is queued in the control spool
and we wait (polling, with a deadline) for the daemon to apply and save it:
the change is in Postfix's table within a second.  Otherwise we take the lock
ourselves and change the saved state only.  A stopped daemon leaves the table
empty (fail closed), and it stays empty until the daemon starts and puts the
saved, unexpired grants back; so an offline request reaches Postfix then.

The state lock is the one test of "a daemon runs": the daemon holds it from
before its first table write until after it emptied the table at stop, under
systemd and SysV init alike, and the kernel drops it when the process dies.
Whoever holds it may write the table; nobody else does.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Tuple

from popbsmtp.config import Settings
from popbsmtp.errors import MapError, PopbsmtpError
from popbsmtp.grants import GrantTable, control
from popbsmtp.grants.control import apply_request
from popbsmtp.grants.state import Snapshot, StateFile, StateLock, ensure_dir
from popbsmtp.maps.keeper import withdraw_table

WAIT = 5.0


OFFLINE = "saved; the daemon is not running, so Postfix's table is unchanged until it starts"


def perform(settings: Settings, request: Dict[str, Any]) -> str:
    """Apply a request; return "daemon" or what the offline change did, for the user."""
    ensure_dir(settings.state_dir)
    lock = StateLock(settings.state_dir)
    if lock.acquire():
        try:
            _offline(settings, request)
            return OFFLINE + _withdraw_leftovers(settings)
        finally:
            lock.release()
    path = control.submit(settings.state_dir, request)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if not os.path.exists(path):
            if os.path.exists(control.rejected(path)):
                raise PopbsmtpError(
                    f"the daemon refused the request (its log says why); it is set aside "
                    f"as {control.rejected(path)}"
                )
            return "daemon"
        time.sleep(0.02)  # polling for another process; there is no event to wait on
    raise PopbsmtpError(
        f"the daemon did not pick up the request within {WAIT:g}s; it stays queued in "
        f"{control.spool_dir(settings.state_dir)} and is applied when the daemon runs"
    )


def _offline(settings: Settings, request: Dict[str, Any]) -> None:
    try:
        control.check_request(request)  # the same limits the daemon applies
    except ValueError as exc:
        raise PopbsmtpError(f"refused: {exc}") from None
    state = StateFile(settings.state_dir)
    snap = state.load()
    now = time.time()
    table = GrantTable(max_entries=settings.max_entries)
    for ip, expires, profile, rule in snap.grants:
        if expires > now:
            table.grant(ip, expires, profile, rule)
    pending = control.pending(settings.state_dir)
    for _path, queued in pending:
        apply_request(table, queued, now, settings.grace)
    apply_request(table, request, now, settings.grace)
    state.save(Snapshot(table.iter_rows(), snap.position, snap.extra))
    for path, _ in pending:
        control.done(path)


def _withdraw_leftovers(settings: Settings) -> str:
    """Empty a table that a killed daemon left full (we hold the lock: none runs)."""
    try:
        held = withdraw_table(settings)
    except MapError as exc:
        raise PopbsmtpError(f"{OFFLINE}; but emptying the table failed: {exc}") from None
    return f"; withdrew {held} stale key(s) from {settings.map}" if held else ""


def withdraw(settings: Settings) -> Optional[int]:
    """Empty the table unless a daemon runs: the keys it held, or None when a daemon
    runs (its table is left alone), or 0 when there is no table at all.

    Holding the state lock while emptying makes a daemon that starts meanwhile
    wait (it waits up to 5 s for the lock) and then reconcile the table; a
    daemon that runs is never raced, as the lock says it is there.
    """
    lock: Optional[StateLock] = None
    if os.path.isdir(settings.state_dir):
        lock = StateLock(settings.state_dir)
        if not lock.acquire():
            return None
    try:
        return withdraw_table(settings) or 0
    finally:
        if lock is not None:
            lock.release()


def grants(settings: Settings) -> List[Tuple[str, float, str, str]]:
    """Current grants, freshly saved by the daemon if one is running."""
    if os.path.isdir(settings.state_dir):
        lock = StateLock(settings.state_dir)
        if lock.acquire():
            lock.release()
        else:
            perform(settings, {"op": "save"})
    now = time.time()
    rows = StateFile(settings.state_dir).load().grants
    return sorted((r for r in rows if r[1] > now), key=lambda r: r[1])
