#!/usr/bin/env python3
"""Idle cost: CPU seconds a daemon with 100,000 grants uses in 60 s on a silent log.

The grants are pre-loaded as the daemon's saved state and expire long after
the run, so nothing is due; what remains is the safety poll and whatever
else wakes the core loop.  Read from ``/proc/PID/stat`` (user + system).

    idle.py [--seconds 60] [--preload 100000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from typing import List

from common import Daemon, emit, workdir, write_config
from latency import preload


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--preload", type=int, default=100_000)
    args = parser.parse_args(argv)
    directory = workdir("idle")
    (directory / "mail.log").write_text("")
    preload(directory, args.preload, 7200.0)
    daemon = Daemon(write_config(directory, grace="2h", max_entries=args.preload + 10)).start()
    try:
        time.sleep(3)  # past start-up (reconcile, first state save)
        before = daemon.cpu_seconds()
        time.sleep(args.seconds)
        used = daemon.cpu_seconds() - before
    finally:
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)
    emit(
        [
            {
                "measure": f"idle CPU over {args.seconds:g} s",
                "value": f"{used:.2f} s ({used * 60 / args.seconds:.2f} s/min)",
                "detail": f"{args.preload:,} grants loaded, silent log, poll_interval 2 s",
            }
        ]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
