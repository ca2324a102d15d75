#!/usr/bin/env python3
"""Throughput of the daemon's real path against a bare Python loop, same file, same run.

The full path is the real code: a :class:`popbsmtp.daemon.service.Service` built
from a config in a temporary directory (all default profiles, an lmdb map,
state saving), whose log appears (a hard link) after start; then ``step()``
is timed until every line is consumed.  The ceiling is
``for line in file: if needle in line`` over the same bytes.  Best of
``--repeat`` runs for both (5: this is a shared VM), the file being in the page cache for both.

    throughput.py [--lines 1000000] [--repeat 5] [--style rfc3339|bsd] [--log FILE]
                  [--input profiles|dovecot]

``--input dovecot`` reads the realistic Dovecot log of ``gen_dovecot.py``
(sessions closed by their logouts, auth noise) instead of the profiles'
example lines of ``gen_maillog.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List

from common import emit, generate, log, settings, workdir, write_config


def bare_loop(path: Path) -> float:
    start = time.perf_counter()
    hits = 0
    with open(path, "rb") as handle:
        for line in handle:
            if b"-login: Login: " in line:
                hits += 1
    return time.perf_counter() - start


def full_path(source: Path, lines: int, profiles: str) -> Dict[str, float]:
    from popbsmtp.daemon.service import Service

    directory = workdir("tp")
    try:
        config = write_config(directory, log_level="warning", profiles=profiles)
        svc = Service(settings(config))
        svc.start()  # the log does not exist yet: nothing to read
        os.link(source, directory / "mail.log")
        cpu, start = time.process_time(), time.perf_counter()
        svc.step()  # reads until the end of the file, a bounded batch at a time
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        if svc.tail.stats.lines != lines:
            raise SystemExit(f"read {svc.tail.stats.lines} of {lines} lines: is the log stale?")
        grants, writes = len(svc.table), svc.keeper.writes
        candidates = svc.matcher.stats.candidates
        svc.shutdown()
        return {
            "seconds": elapsed,
            "cpu": cpu,
            "grants": grants,
            "map_writes": writes,
            "candidates": candidates,
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--style", default="rfc3339")
    parser.add_argument("--input", choices=("profiles", "dovecot"), default="profiles")
    parser.add_argument("--profiles", default="auto", help="the profiles option (default auto)")
    parser.add_argument(
        "--log", type=Path, default=None, help="use this log (made if missing; must be fresh)"
    )
    args = parser.parse_args(argv)
    base = workdir("tp-input")
    try:
        path = args.log or base / "mail.log"
        if not path.exists():
            log(f"generating {args.lines} lines ({args.input}, {args.style})")
            script = "gen_dovecot.py" if args.input == "dovecot" else "gen_maillog.py"
            generate(path, args.lines, "--style", args.style, script=script)
        size = path.stat().st_size
        bare, full, info = [], [], {}
        for run in range(args.repeat):
            bare.append(bare_loop(path))
            info = full_path(path, args.lines, args.profiles)
            full.append(info["seconds"])
            log(f"run {run + 1}: bare {bare[-1]:.3f} s, full path {full[-1]:.3f} s, {info}")
        best_bare, best_full = min(bare), min(full)
        emit(
            [
                {
                    "measure": f"throughput, full path ({args.input} log, {args.profiles}, "
                    f"{args.style}, lmdb)",
                    "value": f"{args.lines / best_full:,.0f} lines/s, "
                    f"{size / best_full / 1e6:,.0f} MB/s",
                    "detail": f"{best_full:.3f} s for {args.lines:,} lines; "
                    f"{info['candidates']:,} candidate lines, {info['grants']:,} grants, "
                    f"{info['map_writes']} map writes",
                },
                {
                    "measure": "throughput, bare `for line in file` + 1 substring test",
                    "value": f"{args.lines / best_bare:,.0f} lines/s, "
                    f"{size / best_bare / 1e6:,.0f} MB/s",
                    "detail": f"{best_bare:.3f} s",
                },
                {
                    "measure": "throughput ratio full / bare",
                    "value": f"{best_bare / best_full:.0%}",
                    "detail": f"best of {args.repeat}",
                },
            ]
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
