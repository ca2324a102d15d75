#!/usr/bin/env python3
"""Expiry precision on a silent log: how long an entry outlives its expiry in the map.

A real daemon (``grace`` 20 s, sessions off so ``grace`` applies) gets
``--logins`` logins for new addresses at random moments over ten seconds,
then the log falls silent.  The table is read the way Postfix reads it
(shared ``fcntl`` lock, read-only LMDB) every 5 ms; for each address the
first moment it is gone is compared with its expiry (line time + grace).

    expiry.py [--logins 200] [--grace 10]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from typing import Dict, List

from common import Daemon, emit, log, percentile, workdir, write_config
from gen_maillog import stamp_text
from lmdbread import TableReader


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logins", type=int, default=200)
    parser.add_argument("--grace", type=float, default=20.0)  # > the 10 s of logins
    args = parser.parse_args(argv)
    directory = workdir("expiry")
    logfile = directory / "mail.log"
    logfile.write_text("")
    config = write_config(directory, grace=f"{args.grace:g}s", max_session="1s")
    daemon = Daemon(config).start()
    try:
        reader = TableReader(f"{directory}/pbs.lmdb")
        rng = random.Random(3)
        expires: Dict[str, float] = {}
        for n in range(args.logins):
            time.sleep(rng.uniform(0, 10.0 / args.logins * 2))
            ip = f"192.0.{2 + n // 250}.{n % 250 + 1}"
            now = time.time()
            expires[ip] = now + args.grace
            with open(logfile, "a") as handle:
                handle.write(
                    f"{stamp_text(now, 'rfc3339')} mail dovecot: imap-login: Login: user=<u{n}>, "
                    f"method=PLAIN, rip={ip}, lip=127.0.0.1, mpid={n + 100}, secured, "
                    f"session=<Exp{n:013d}>\n"
                )
        log("logins written; the log is silent now")
        gone: Dict[str, float] = {}
        deadline = max(expires.values()) + 30
        while len(gone) < len(expires) and time.time() < deadline:
            present = reader.keys()
            now = time.time()
            for ip in expires:
                if ip not in gone and ip not in present and now >= expires[ip] - 1:
                    gone[ip] = now
            time.sleep(0.005)
        reader.close()
        late = [gone[ip] - expires[ip] for ip in gone]
        early = sum(1 for x in late if x < 0)
        emit(
            [
                {
                    "measure": "expiry precision, silent log (time in map after expiry)",
                    "value": f"p50 {percentile(late, 50) * 1000:.0f} ms, "
                    f"p99 {percentile(late, 99) * 1000:.0f} ms, max {max(late) * 1000:.0f} ms",
                    "detail": f"{len(expires)} entries, {len(expires) - len(gone)} never left, "
                    f"{early} left early; grace {args.grace:g} s; 5 ms sampling",
                }
            ]
        )
    finally:
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
