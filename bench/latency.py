#!/usr/bin/env python3
"""Login→relay latency: from appending a login line to ``postmap -q`` answering.

A real ``popbsmtp run --foreground`` follows a log while this script appends
login lines for new addresses at random intervals and polls
``postmap -q ADDRESS TYPE:path`` (what smtpd's lookup sees) until the value
appears.  The table starts with ``--preload`` grants (written as the
daemon's saved state, so the daemon itself builds the table).  Scenarios:
idle log, busy log (a background writer appends ~500 noise lines/s), and
logins written just before a rename rotation or a copytruncate.  A login not
visible after ``--timeout`` seconds counts as lost.

    latency.py [--map lmdb|hash] [--logins 200] [--preload 100000] [--rotations 20]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from common import Daemon, emit, log, percentile, postmap_query, workdir, write_config
from gen_maillog import Generator, stamp_text

from popbsmtp.grants.state import Snapshot, StateFile


class LogWriter:
    """Appends to the log; the noise thread and the logins share one lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.gen = Generator(seed=7, login_rate=0.0, clients=100)
        self.stop = threading.Event()

    def append(self, text: str) -> None:
        with self.lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(text)

    def noise(self, per_second: int) -> None:
        """Pace ``per_second`` noise lines in batches of ten."""
        interval = 10 / per_second
        next_at = time.monotonic()
        while not self.stop.is_set():
            now = time.time()
            self.append(
                "".join(
                    stamp_text(now, "rfc3339") + " " + self.gen.message() + "\n" for _ in range(10)
                )
            )
            next_at += interval
            self.stop.wait(max(0.0, next_at - time.monotonic()))


def login_line(ip: str) -> str:
    return (
        f"{stamp_text(time.time(), 'rfc3339')} mail dovecot: imap-login: Login: user=<bench>, "
        f"method=PLAIN, rip={ip}, lip=127.0.0.1, mpid=4242, secured, session=<AbCdEfGh12345678>\n"
    )


def visible_after(spec: str, ip: str, appended: float, timeout: float) -> Optional[float]:
    deadline = appended + timeout
    while time.monotonic() < deadline:
        if postmap_query(spec, ip):
            return time.monotonic() - appended
    return None


def preload(directory: Path, count: int, grace: float) -> None:
    now = time.time()
    rows = [
        (f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", now + grace, "dovecot", "login")
        for n in range(1, count + 1)
    ]
    (directory / "state").mkdir(mode=0o750)
    StateFile(str(directory / "state")).save(Snapshot(rows, None))


class Scenario:
    def __init__(self, args: argparse.Namespace, kind: str) -> None:
        self.args = args
        self.kind = kind
        self.dir = workdir(f"lat-{kind}")
        self.spec = f"{args.map}:{self.dir}/pbs"
        self.writer = LogWriter(self.dir / "mail.log")
        self.writer.append("")
        preload(self.dir, args.preload, 3600.0)
        self.daemon = Daemon(
            write_config(
                self.dir, map=self.spec, grace="1h", log_level="info", max_entries=2_000_000
            )
        )
        self.counter = 0

    def next_ip(self) -> str:
        self.counter += 1
        return (
            f"172.{16 + (self.counter >> 16 & 15)}.{self.counter >> 8 & 255}.{self.counter & 255}"
        )

    def measure(self, before: Callable[[], None] = lambda: None) -> Optional[float]:
        ip = self.next_ip()
        self.writer.append(login_line(ip))
        appended = time.monotonic()
        before()
        return visible_after(self.spec, ip, appended, self.args.timeout)

    def close(self) -> None:
        self.writer.stop.set()
        self.daemon.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def steady(args: argparse.Namespace, busy: bool) -> Dict[str, object]:
    scenario = Scenario(args, "busy" if busy else "idle")
    try:
        scenario.daemon.start()
        noise = threading.Thread(target=scenario.writer.noise, args=(500,), daemon=True)
        if busy:
            noise.start()
        rng = random.Random(11)
        results = []
        for _ in range(args.logins):
            time.sleep(rng.uniform(0.0, 0.1))  # random arrival, not in step with any poll
            results.append(scenario.measure())
        return row(f"{args.map}, {'busy ~500 lines/s' if busy else 'idle'} log", results)
    finally:
        scenario.close()


def rename_rotation(writer: LogWriter) -> None:
    with writer.lock:
        os.rename(writer.path, f"{writer.path}.1")
        writer.path.touch()


def copytruncate(writer: LogWriter) -> None:
    with writer.lock:
        shutil.copyfile(writer.path, f"{writer.path}.1")
        os.truncate(writer.path, 0)


def rotating(args: argparse.Namespace, how: str) -> Dict[str, object]:
    scenario = Scenario(args, how)
    rotate = rename_rotation if how == "rename" else copytruncate
    try:
        scenario.daemon.start()
        results: List[Optional[float]] = []
        for _ in range(args.rotations):
            # a login just before the rotation, then one into the new/truncated file
            results.append(scenario.measure(before=lambda: rotate(scenario.writer)))
            results.append(scenario.measure())
            with scenario.writer.lock:
                with_suffix = Path(f"{scenario.writer.path}.1")
                with_suffix.unlink(missing_ok=True)
            time.sleep(0.2)
        return row(f"{args.map}, across {how} rotations", results)
    finally:
        scenario.close()


def row(what: str, results: List[Optional[float]]) -> Dict[str, object]:
    seen = [r * 1000 for r in results if r is not None]
    lost = len(results) - len(seen)
    return {
        "measure": f"login→relay latency ({what})",
        "value": f"p50 {percentile(seen, 50):.1f} ms, p99 {percentile(seen, 99):.1f} ms, "
        f"max {max(seen, default=float('nan')):.1f} ms",
        "detail": f"{len(results)} logins, {lost} lost; {args_preload} entries preloaded",
    }


args_preload = 0


def main(argv: List[str]) -> int:
    global args_preload
    parser = argparse.ArgumentParser()
    parser.add_argument("--map", default="lmdb")
    parser.add_argument("--logins", type=int, default=200)
    parser.add_argument("--preload", type=int, default=100_000)
    parser.add_argument("--rotations", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument(
        "--only", choices=("idle", "busy", "rename", "copytruncate"), action="append"
    )
    args = parser.parse_args(argv)
    args_preload = args.preload
    wanted = args.only or ["idle", "busy", "rename", "copytruncate"]
    rows = []
    for kind in wanted:
        log(f"latency: {args.map}, {kind}")
        if kind in ("idle", "busy"):
            rows.append(steady(args, kind == "busy"))
        else:
            rows.append(rotating(args, kind))
        log(str(rows[-1]))
    emit(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
