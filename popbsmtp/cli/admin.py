"""What ``popbsmtp add/remove/flush/list`` do, with or without a running daemon.

If the daemon holds the state lock, a request is queued in the control spool
and we wait (polling, with a deadline) for the daemon to apply and save it.
Otherwise we take the lock ourselves and do what the daemon would: update
the snapshot, then make the map match it — so the change is in the map
within a second either way and survives the next start.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Tuple

from popbsmtp.config import Settings
from popbsmtp.errors import PopbsmtpError
from popbsmtp.grants import GrantTable, control
from popbsmtp.grants.control import apply_request
from popbsmtp.grants.state import Snapshot, StateFile, StateLock, ensure_dir
from popbsmtp.maps.keeper import writer_for

WAIT = 5.0


def perform(settings: Settings, request: Dict[str, Any]) -> str:
    """Apply a request; return "daemon" or "offline" (who applied it)."""
    ensure_dir(settings.state_dir)
    lock = StateLock(settings.state_dir)
    if lock.acquire():
        try:
            _offline(settings, request)
            return "offline"
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
    if settings.map.served:
        return  # a socketmap exists only while the daemon runs; it starts from this state
    writer = writer_for(settings)
    try:
        writer.replace(table.keys())
    finally:
        writer.close()


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
