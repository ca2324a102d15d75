"""SIGTERM and SIGKILL of the real daemon at random moments during traffic.

After each restart: every login written so far (all within ``grace``) is in
the table Postfix reads, no login older than ``grace`` ever is, and, with the
writer paused, the map equals the daemon's grant table (``popbsmtp list``).
A SIGTERM'd daemon saved its position, so no login is granted twice across
restarts; after SIGKILL up to one save interval is read again (idempotent)
and that count is reported, not hidden.

Short by default; ``--slow`` / ``POPBSMTP_LONG=1`` runs 100 of each.
"""

from __future__ import annotations

import json
import random
import re
import signal
from collections import Counter

import pytest
from reliability_support import Traffic, long_run, map_keys
from support import Daemon, popbsmtp, wait_for, write_config


def grant_table(config) -> set:
    out = popbsmtp("list", "--json", "--config", str(config)).stdout
    return {json.loads(line)["ip"] for line in out.splitlines()}


def caught_up(table: str, fresh: list) -> bool:
    return set(fresh) <= map_keys(table)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["TERM", "KILL"])
def test_random_restarts_lose_nothing_and_grant_nothing_old(pf_tmp, sig, request):
    cycles = 100 if long_run(request.config) else 3
    rng = random.Random(f"{sig}-{cycles}")
    log = pf_tmp / "mail.log"
    log.touch()
    config = write_config(pf_tmp, grace="1h", poll_interval="1s")
    table = f"lmdb:{pf_tmp}/pbs"
    daemons = [Daemon(config).start()]
    traffic = Traffic(log).start()
    try:
        for cycle in range(cycles):
            mark = traffic.lines + rng.randint(20, 3000)  # a random moment, in lines
            wait_for(lambda mark=mark: traffic.lines >= mark, 10, what="traffic")
            code = daemons[-1].stop(sig)
            assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL), daemons[-1].log()
            daemons.append(Daemon(config).start())
            _, fresh, old = traffic.snapshot()
            wait_for(lambda f=fresh: caught_up(table, f), 30, 0.1, f"catch-up {cycle}")
            assert not map_keys(table) & set(old), "a login older than grace was granted"
            if cycle % 10 == 0:
                traffic.pause(True)
                _, fresh, _ = traffic.snapshot()
                wait_for(lambda f=fresh: caught_up(table, f), 30, 0.1, "catch-up")
                assert grant_table(config) == map_keys(table) == set(fresh)
                traffic.pause(False)
        traffic.stop()
        written, fresh, old = traffic.snapshot()
        wait_for(lambda: caught_up(table, fresh), 30, 0.1, "final catch-up")
        in_map = map_keys(table)
        assert daemons[-1].stop() == 0
        assert map_keys(table) == set(), "a stopped daemon leaves the table empty"
    finally:
        traffic.stop()
        for daemon in daemons:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop()
    granted = Counter(ip for d in daemons for ip in re.findall(r"granted (\S+) until", d.log()))
    figures = {
        "signal": sig.name,
        "restarts": cycles,
        "lines_written": written,
        "fresh_logins": len(fresh),
        "old_logins": len(old),
        "in_map": len(in_map & set(fresh)),
        "old_in_map": len(in_map & set(old)),
        "granted_twice": sum(1 for n in granted.values() if n > 1),
    }
    print("FIGURES", figures)
    assert in_map == set(fresh) == set(granted)
    assert grant_table(config) == set(fresh)  # kept in the saved state for the next start
    if sig == signal.SIGTERM:
        assert figures["granted_twice"] == 0, "a clean restart read lines twice"
