"""SIGKILL in the middle of table writes while Postfix's own reader queries it.

A flood of fresh logins keeps the daemon writing the table; a reader loops
``postmap -q`` for a client granted by hand (must always answer ``OK``) and
one never granted (must always be "not found", exit 1, nothing on stderr).
The daemon is killed at random moments and restarted.  The reader must never
see an error or a wrong answer, and after the restarts the table equals the
grant table.  Table types: lmdb (written in place) and, once
``popbsmtp/maps/rebuild.py`` provides them, the postmap-rebuilt ``hash``.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading

import pytest
from postfix_instance import postfix_tool
from reliability_support import Traffic, long_run, map_keys
from support import Daemon, popbsmtp, wait_for, write_config

from popbsmtp.maps import _discover

GRANTED, NEVER = "192.0.2.250", "192.0.2.251"
TYPES = [t for t in ("lmdb", "hash") if t in _discover()]


class Reader(threading.Thread):
    """Postfix's point of view: ``postmap -q`` in a loop, every answer checked."""

    def __init__(self, table: str) -> None:
        super().__init__(name="postmap-reader", daemon=True)
        self.table = table
        self.queries = 0
        self.wrong: list = []
        self.done = threading.Event()

    def run(self) -> None:
        postmap = postfix_tool("postmap")
        while not self.done.is_set():
            for key, want_code, want_out in ((GRANTED, 0, "OK\n"), (NEVER, 1, "")):
                got = subprocess.run(
                    [*postmap, "-q", key, self.table], capture_output=True, text=True, timeout=30
                )
                self.queries += 1
                if (got.returncode, got.stdout, got.stderr) != (want_code, want_out, ""):
                    self.wrong.append((key, got.returncode, got.stdout, got.stderr))


@pytest.mark.parametrize("kind", TYPES)
def test_kill_during_writes_never_shows_postfix_a_torn_table(pf_tmp, kind, request):
    kills = 100 if long_run(request.config) else 4
    rng = random.Random(kills)
    log = pf_tmp / "mail.log"
    log.touch()
    # ~1,500 logins/s for minutes: lift max_entries (100,000) so no login is refused.
    config = write_config(
        pf_tmp, map=f"{kind}:{pf_tmp}/pbs", grace="1h", poll_interval="1s", max_entries=10**6
    )
    table = f"{kind}:{pf_tmp}/pbs"
    daemon = Daemon(config).start()
    popbsmtp("add", GRANTED, "--for", "2h", "--config", str(config))
    wait_for(lambda: GRANTED in map_keys(table), what="hand-made grant")
    reader = Reader(table)
    reader.start()
    traffic = Traffic(log, rate=3000, login_every=2).start()
    try:
        for _ in range(kills):
            mark = traffic.lines + rng.randint(100, 3000)
            wait_for(lambda mark=mark: traffic.lines >= mark, 10, what="traffic")
            assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
            daemon = Daemon(config).start()
        traffic.stop()
        _, fresh, _ = traffic.snapshot()
        wait_for(lambda: set(fresh) <= map_keys(table), 120, 0.5, "catch-up")
        reader.done.set()  # a clean stop empties the table: Postfix then finds no one
        reader.join(60)
        in_map = map_keys(table)
        assert daemon.stop() == 0
    finally:
        reader.done.set()
        reader.join(60)
        traffic.stop()
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop(signal.SIGKILL)
    listed = popbsmtp("list", "--json", "--config", str(config)).stdout.count('"ip"')
    print(
        "FIGURES",
        {
            "kind": kind,
            "kills": kills,
            "queries": reader.queries,
            "wrong": len(reader.wrong),
            "logins": len(fresh),
        },
    )
    assert reader.queries > 0 and not reader.wrong, reader.wrong[:5]
    assert in_map == set(fresh) | {GRANTED}
    assert map_keys(table) == set(), "a stopped daemon leaves the table empty"
    assert listed == len(fresh) + 1  # the grants stay saved for the next start
