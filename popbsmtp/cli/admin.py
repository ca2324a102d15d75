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

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from popbsmtp import config
from popbsmtp.cli.args import load_settings
from popbsmtp.cli.logtest import iso
from popbsmtp.config import Settings
from popbsmtp.config.values import duration, format_duration
from popbsmtp.errors import EXIT_ERROR, EXIT_OK, MapError, PopbsmtpError
from popbsmtp.grants import GrantTable, control, when
from popbsmtp.grants.control import apply_request
from popbsmtp.grants.state import Snapshot, StateFile, StateLock, ensure_dir
from popbsmtp.maps import exact_ipv6_fix
from popbsmtp.maps.keeper import withdraw_table
from popbsmtp.parse.addresses import InvalidAddress, postfix_key
from popbsmtp.policy import ipv6_exact_only, ipv6_refusal

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


# -- the commands ----------------------------------------------------------


def _not_a_front(settings: config.Settings, command: str) -> None:
    """A front holds no grants of its own: they are the POP/IMAP hosts' rows."""
    if settings.grants_from != "log":
        raise PopbsmtpError(
            f"{command}: this host is a socketmap front (grants_from = {settings.grants_from});"
            f" run popbsmtp {command} on the POP/IMAP host that granted the client"
        )


def cmd_list(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    _not_a_front(settings, "list")
    rows = grants(settings)
    if args.read_map:
        from popbsmtp.doctor import compare_map

        return compare_map(settings, {row[0] for row in rows}, sys.stdout)
    if args.json:
        for ip, expires, profile, rule in rows:
            print(json.dumps({"ip": ip, "expires": iso(expires), "profile": profile, "rule": rule}))
        return EXIT_OK
    now = time.time()
    for ip, expires, profile, rule in rows:
        left = format_duration(max(1, round(expires - now)))
        print(f"{ip:<40} until {when(expires)}  ({left} left)  {profile}/{rule}")
    print(f"{len(rows)} client(s) authorized", file=sys.stderr)
    return EXIT_OK


def _key(text: str) -> str:
    try:
        return postfix_key(text)
    except InvalidAddress as exc:
        raise PopbsmtpError(f"{text!r}: {exc}") from None


def cmd_add(args: argparse.Namespace) -> int:
    ip = _key(args.ip)
    request = {"op": "add", "ip": ip, "grace": args.for_ and duration(args.for_)}
    settings = load_settings(args)
    _not_a_front(settings, "add")
    refused = ipv6_refusal(ip, ipv6_exact_only(settings), exact_ipv6_fix(settings.map))
    if refused:
        raise PopbsmtpError(f"not added: {refused}")
    who = perform(settings, request)
    print(f"added {request['ip']} ({who})")
    return EXIT_OK


def cmd_remove(args: argparse.Namespace) -> int:
    request = {"op": "remove", "ip": _key(args.ip)}
    settings = load_settings(args)
    _not_a_front(settings, "remove")
    if request["ip"] not in {row[0] for row in grants(settings)}:
        print(f"{request['ip']} is not granted; nothing to remove", file=sys.stderr)
        return EXIT_ERROR
    who = perform(settings, request)
    print(f"removed {request['ip']} ({who})")
    return EXIT_OK


def cmd_flush(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    _not_a_front(settings, "flush")
    who = perform(settings, {"op": "flush"})
    print(f"flushed ({who})")
    return EXIT_OK


def cmd_withdraw(args: argparse.Namespace) -> int:
    """Empty the table after the daemon stopped (ExecStopPost, init script, package erase)."""
    if args.dry_run:
        return EXIT_OK  # a dry run never wrote the table
    if not os.path.exists(args.config or config.DEFAULT_CONFIG):
        return EXIT_OK  # removed or never configured: no table of ours to empty
    settings = load_settings(args)
    held = withdraw(settings)
    if held is None:
        print(
            f"popbsmtp is running ({settings.state_dir}/lock is held): {settings.map} is left to it"
        )
    elif held:
        print(
            f"withdrew {held} client(s) from {settings.map}; the saved grants "
            "return when the daemon starts"
        )
    return EXIT_OK
