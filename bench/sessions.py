#!/usr/bin/env python3
"""Open sessions alone: cost per login and logout, longest pause, bytes per session.

Drives :class:`popbsmtp.policy.Policy` (its session tracker, and a grant table) with
``N`` Dovecot logins from ``N`` addresses, each its own session, then their
logouts in the same order.  Reported: microseconds per login and per logout
(the tracker and the grant table together, as the core loop calls them),
the longest single call (the hash tables grow a shard at a time, so no call
should move all sessions), and the bytes the open-session structure holds
per session at its fullest (its arrays and hash tables; the address strings
are the grant table's).

    sessions.py [--sessions 1000000]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Dict, List

from common import emit, log

from popbsmtp.grants import GrantTable
from popbsmtp.parse.addresses import IgnoredNetworks
from popbsmtp.parse.matcher import Login
from popbsmtp.policy import Policy, apply
from popbsmtp.profiles import LOGIN, LOGOUT, registry


def measure(count: int) -> List[Dict[str, object]]:
    dovecot = registry()["dovecot"]
    login_rule = next(r.name for r in dovecot.rules if r.event == LOGIN)
    logout_rule = next(r.name for r in dovecot.rules if r.event == LOGOUT)
    policy = Policy(1800.0, 86400.0, IgnoredNetworks.none(), [dovecot])
    tracker, table = policy.sessions, GrantTable()
    now = time.time() - count / 1000
    addresses = [f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in range(count)]
    worst = {"login": 0.0, "logout": 0.0}
    total = {"login": 0.0, "logout": 0.0}
    for n, ip in enumerate(addresses):
        event = Login(now + n / 1000, ip, ip, "dovecot", login_rule, LOGIN, f"S{n:015d}")
        started = time.perf_counter()
        for decision in policy.decide(event, event.time, table):
            apply(decision, table)
        took = time.perf_counter() - started
        total["login"] += took
        worst["login"] = max(worst["login"], took)
    held = tracker._open.footprint()
    for n in range(count):
        event = Login(now + count / 1000, None, None, "dovecot", logout_rule, LOGOUT, f"S{n:015d}")
        started = time.perf_counter()
        for decision in policy.decide(event, event.time, table):
            apply(decision, table)
        took = time.perf_counter() - started
        total["logout"] += took
        worst["logout"] = max(worst["logout"], took)
    if tracker.open_sessions() or tracker.stats.closed != count:
        raise SystemExit(f"sessions left open: {tracker.open_sessions()}")
    return [
        {
            "measure": f"sessions, {count:,} logins then their logouts (policy + grant table)",
            "value": f"login {total['login'] / count * 1e6:.1f} µs, "
            f"logout {total['logout'] / count * 1e6:.1f} µs",
            "detail": f"longest call: login {worst['login'] * 1e3:.1f} ms, "
            f"logout {worst['logout'] * 1e3:.1f} ms",
        },
        {
            "measure": f"sessions, memory of {count:,} open sessions",
            "value": f"{held / count:.0f} bytes per session",
            "detail": f"{held / 2**20:.0f} MiB in arrays and hash tables; "
            "the address strings are shared with the grant table",
        },
    ]


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    log(f"sessions: {args.sessions}")
    emit(measure(args.sessions))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
