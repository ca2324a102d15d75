#!/usr/bin/env python3
"""socketmap: lookup latency under concurrent smtpd-like clients, and login→relay.

A real ``popbsmtp run --foreground`` serves ``socketmap:unix:…`` with
``--preload`` grants (written as its saved state).  Lookups: ``--clients``
processes, each with one persistent connection as smtpd keeps it, ask
``unknown`` then an address (half granted, half not), either paced
(``--rate`` lookups/s per client, as RCPT commands arrive) or back to back
(flood); every request is timed from send to reply.  Bounded by
``--seconds`` and ``--count`` per client.  Login→relay: a login line is
appended and a client polls the socket until the address answers OK (what
smtpd's next lookup would see), on an idle and a busy (~500 lines/s) log.

    socketmap.py [--clients 20] [--seconds 10] [--count 20000] [--preload 100000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

from common import Daemon, emit, log, percentile, seconds_until, workdir, write_config
from latency import LogWriter, login_line, preload

from popbsmtp.maps._socketserver import encode, parse

NAME = "popbsmtp"


class Client:
    """One persistent socketmap connection, like smtpd's."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.buffer = b""

    def ask(self, key: str) -> bytes:
        self.sock.sendall(encode(f"{NAME} {key}".encode()))
        while True:
            reply, used = parse(self.buffer, 100_000)
            if reply is not None:
                self.buffer = self.buffer[used:]
                return reply
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RuntimeError("server closed the connection")
            self.buffer += chunk


def granted(n: int) -> str:
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def client_run(path: str, seed: int, rate: float, seconds: float, count: int, out) -> None:
    rng = random.Random(seed)
    client = Client(path)
    times: List[float] = []
    wrong = 0
    interval = 1.0 / rate if rate else 0.0
    end = time.monotonic() + seconds
    next_at = time.monotonic() + rng.uniform(0, interval)
    while len(times) < count and time.monotonic() < end:
        if interval:
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            next_at += rng.expovariate(rate)
        hit = rng.random() < 0.5
        key = granted(rng.randint(1, 1000)) if hit else f"192.0.2.{rng.randint(1, 254)}"
        for ask in ("unknown", key):  # what smtpd asks a pattern table for one client
            started = time.perf_counter()
            reply = client.ask(ask)
            times.append(time.perf_counter() - started)
            expected = b"OK OK" if ask == key and hit else b"NOTFOUND "
            wrong += reply != expected
    out.put((times, wrong))


def lookups(path: str, args: argparse.Namespace, rate: float) -> Dict[str, object]:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(
            target=client_run, args=(path, i, rate, args.seconds, args.count, queue)
        )
        for i in range(args.clients)
    ]
    started = time.monotonic()
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=args.seconds + 60) for _ in procs]
    took = time.monotonic() - started
    for proc in procs:
        proc.join(10)
    times = [t * 1000 for part, _ in results for t in part]
    wrong = sum(w for _, w in results)
    mode = f"paced {rate:g}/s each" if rate else "back to back"
    return {
        "measure": f"socketmap lookup latency ({args.clients} clients, {mode})",
        "value": f"p50 {percentile(times, 50):.3f} ms, p99 {percentile(times, 99):.3f} ms, "
        f"max {max(times, default=float('nan')):.1f} ms",
        "detail": f"{len(times)} lookups in {took:.1f} s ({len(times) / took:.0f}/s), "
        f"{wrong} wrong answers; {args.preload} grants",
    }


def login_to_relay(
    path: str, logfile: Path, args: argparse.Namespace, busy: bool
) -> Dict[str, object]:
    writer = LogWriter(logfile)
    noise = threading.Thread(target=writer.noise, args=(500,), daemon=True)
    if busy:
        noise.start()
    client = Client(path)
    rng = random.Random(5)
    results: List[Optional[float]] = []
    try:
        for n in range(args.logins):
            ip = f"172.{16 + busy}.{n >> 8 & 255}.{n & 255}"
            time.sleep(rng.uniform(0.0, 0.1))
            writer.append(login_line(ip))
            appended = time.monotonic()
            found = lambda ip=ip: client.ask(ip) == b"OK OK"  # noqa: E731
            results.append(seconds_until(found, appended, args.timeout))
    finally:
        writer.stop.set()
    seen_ms = [r * 1000 for r in results if r is not None]
    what = "busy ~500 lines/s" if busy else "idle"
    return {
        "measure": f"login→relay latency (socketmap, {what} log)",
        "value": f"p50 {percentile(seen_ms, 50):.1f} ms, p99 {percentile(seen_ms, 99):.1f} ms, "
        f"max {max(seen_ms, default=float('nan')):.1f} ms",
        "detail": f"{len(results)} logins, {len(results) - len(seen_ms)} lost; "
        f"polled over the socket as smtpd asks; {args.preload} grants",
    }


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=50.0, help="paced lookups/s per client")
    parser.add_argument("--preload", type=int, default=100_000)
    parser.add_argument("--logins", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    directory = workdir("socketmap")
    rundir = directory / "run"
    rundir.mkdir(mode=0o750)
    rundir.chmod(0o750)
    path = str(rundir / "socketmap")
    (directory / "mail.log").touch()
    preload(directory, args.preload, 3600.0)
    config = write_config(
        directory,
        map=f"socketmap:unix:{path}:{NAME}",
        map_group=str(os.getgid()),
        grace="1h",
        max_entries=2_000_000,
    )
    daemon = Daemon(config)
    rows = []
    try:
        daemon.start()
        for rate in (args.rate, 0.0):
            log(f"socketmap: {args.clients} clients, rate {rate or 'flood'}")
            rows.append(lookups(path, args, rate))
        for busy in (False, True):
            log(f"socketmap: login→relay, {'busy' if busy else 'idle'} log")
            rows.append(login_to_relay(path, directory / "mail.log", args, busy))
    finally:
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)
    emit(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
