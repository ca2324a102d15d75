#!/usr/bin/env python3
"""Restart time on a large log: from exec to "following", with and without a saved position.

A ~1 GB log covering ``--span`` seconds (default two days) is generated
once.  (b) A daemon with an empty state directory must not read it all: it
bisects to the start of the window that can still grant, the last
``grace`` (30 min; sessions are not kept across restarts, so ``max_session``
does not widen it), and reads from there.  (a) After a clean stop, the
daemon starts again from its saved position.  Each is timed from ``Popen``
to the "following" line in the daemon's log, i.e. including interpreter
start-up and imports, the way an init system sees it.

    restart.py [--lines 7300000] [--span 172800] [--repeat 3] [--log FILE]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Dict, List

from common import Daemon, emit, generate, log, workdir, write_config


def timed_start(directory: Path) -> Dict[str, float]:
    daemon = Daemon(directory / "popbsmtp.conf")
    daemon.start(wait_ready=False)
    ready = daemon.wait_log("following ", count=daemon.text().count("following ") + 1)
    seconds = ready - daemon.started
    rss = daemon.max_rss_kib()
    daemon.stop()
    return {"seconds": seconds, "rss_kib": rss}


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=7_300_000)  # ~1.0 GB
    parser.add_argument("--span", type=float, default=172800.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--log", type=Path, default=None, help="use this log (made if missing)")
    args = parser.parse_args(argv)
    directory = workdir("restart")
    try:
        target = directory / "mail.log"
        if args.log is None:
            log(f"generating {args.lines} lines over {args.span:.0f} s")
            generate(target, args.lines, "--span", str(args.span))
        else:
            if not args.log.exists():
                generate(args.log, args.lines, "--span", str(args.span))
            target.symlink_to(args.log.resolve())
        size = target.stat().st_size
        rows = []
        for label, session in (("sessions off", "1s"), ("max_session 24 h", "24h")):
            write_config(directory, grace="30m", max_session=session, max_entries=1_000_000)
            without, with_pos = [], []
            for _ in range(args.repeat):
                shutil.rmtree(directory / "state", ignore_errors=True)
                without.append(timed_start(directory)["seconds"])  # no state: bisect
                with_pos.append(timed_start(directory)["seconds"])  # saved position
                log(f"{label}: without position {without[-1]:.3f} s, with {with_pos[-1]:.3f} s")
            detail = (
                f"{size / 1e9:.2f} GB log over {args.span / 3600:.0f} h, grace 30 min, {label}; "
                f"best of {args.repeat}"
            )
            rows += [
                {
                    "measure": f"restart, saved position ({label})",
                    "value": f"{min(with_pos):.2f} s",
                    "detail": f"{detail}, worst {max(with_pos):.2f} s",
                },
                {
                    "measure": f"restart, no saved position ({label})",
                    "value": f"{min(without):.2f} s",
                    "detail": f"{detail}, worst {max(without):.2f} s",
                },
            ]
        emit(rows)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
