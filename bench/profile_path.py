#!/usr/bin/env python3
"""Where the daemon's full path spends its time: each stage alone, then cProfile.

On one log (made by ``gen_dovecot.py`` when not given), a :class:`Service`
as ``throughput.py`` builds it; CPU seconds of each stage run alone over the
whole file (counting lines, the needle searches, the candidates' envelope
split and rule match, sessions and grants for the events, the map write),
then ``cProfile`` of one real ``step()`` sorted by own time.  A tool for
finding the next hot spot, not a benchmark: it prints text, not JSON rows.

    profile_path.py [--log FILE] [--lines 1000000] [--top 25] [--profiles auto]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import time
from pathlib import Path
from typing import List

from common import generate, settings, workdir, write_config


def blocks_of(path: Path) -> List[bytes]:
    """The file cut at line ends into blocks of about 1 MiB, as the tail reads it."""
    data, blocks, pos = path.read_bytes(), [], 0
    while pos < len(data):
        end = data.rfind(b"\n", pos, pos + (1 << 20)) + 1 or len(data)
        blocks.append(data[pos:end])
        pos = end
    return blocks


def service(directory: Path, profiles: str):  # -> popbsmtp.daemon.service.Service
    from popbsmtp.daemon.service import Service

    svc = Service(settings(write_config(directory, log_level="warning", profiles=profiles)))
    svc.start()
    return svc


def stages(path: Path, profiles: str) -> None:
    blocks = blocks_of(path)
    directory = workdir("profile")
    svc = service(directory, profiles)
    try:
        matcher, now, clock = svc.matcher, time.time(), time.process_time
        took = {}
        start = clock()
        lines = sum(block.count(b"\n") for block in blocks)
        took["count lines"] = clock() - start
        start = clock()
        spans = [matcher._candidate_lines(block) for block in blocks]
        took["needle searches"] = clock() - start
        start = clock()
        events = [e for block in blocks for e in matcher.match_block(block, now)]
        took["search + split + match (match_block)"] = clock() - start
        start = clock()
        for login in events:
            svc.handle(login, now)
        took["sessions and grants"] = clock() - start
        start = clock()
        svc.keeper.publish(svc.table, now)
        took["map write"] = clock() - start
        candidates = sum(map(len, spans))
        print(f"{lines:,} lines, {candidates:,} candidates, {len(events):,} events")
        for name, seconds in took.items():
            print(f"  {name:40s} {seconds:7.3f} s CPU")
    finally:
        svc.shutdown()
        shutil.rmtree(directory, ignore_errors=True)


def profile(path: Path, top: int, profiles: str) -> None:
    directory = workdir("profile")
    svc = service(directory, profiles)
    try:
        os.link(path, directory / "mail.log")
        profiler = cProfile.Profile()
        profiler.runcall(svc.step)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(top)
    finally:
        svc.shutdown()
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", type=Path, default=None, help="use this log (must be fresh)")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--profiles", default="auto", help="the profiles option (default auto)")
    args = parser.parse_args(argv)
    base = workdir("profile-input")
    try:
        path = args.log or generate(
            base / "mail.log", args.lines, "--ipv6-share", "0", script="gen_dovecot.py"
        )
        stages(path, args.profiles)
        profile(path, args.top, args.profiles)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
