#!/usr/bin/env python3
"""pgsql: login line → relay allowed, beside lmdb, measured the same way.

A real PostgreSQL (initdb/pg_ctl in a temp dir on a loopback port, as the
``postgres`` user) holds the table ``popbsmtp pgsql-init`` creates; a real
``popbsmtp run --foreground`` with ``--preload`` grants follows a log.  A
login line is appended and ``postmap -q ADDRESS pgsql:FILE`` (what smtpd's
lookup sees: the same query, the expiry checked in SQL) is polled until it
answers.  The same loop then runs against an ``lmdb:`` table, so the two
figures differ only in the table.  Needs root (the server runs as postgres).
With ``--front``, a second daemon is a socketmap front fed by the table
(``grants_from = pgsql:``) and ``postmap -q`` asks the front instead: login
line on the POP/IMAP host → row → NOTIFY → the front's mirror → relay.

    pgsql.py [--logins 200] [--preload 100000] [--timeout 10] [--front]
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from common import ROOT, Daemon, emit, log, percentile, seconds_until, workdir, write_config
from latency import LogWriter, login_line, preload

sys.path.insert(0, str(ROOT / "tests" / "integration"))
from pg_server import started  # noqa: E402 - the tests' real PostgreSQL harness


def postmap(config_dir: Path, spec: str, key: str) -> Optional[str]:
    cmd = ["postmap", "-c", str(config_dir), "-q", key, spec]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def measure(
    directory: Path, spec: str, args: argparse.Namespace, label: str, ask: str = ""
) -> Dict[str, object]:
    """``ask``: the table postmap polls (default ``spec``, the one the daemon writes)."""
    ask = ask or spec
    writer = LogWriter(directory / "mail.log")
    writer.append("")
    rng = random.Random(11)
    results: List[Optional[float]] = []
    daemon = Daemon(
        write_config(
            directory,
            map=spec,
            grace="1h",
            max_entries=2_000_000,
            postfix_config_dir=directory / "postfix",
        )
    ).start()
    try:
        for n in range(args.logins):
            ip = f"172.20.{n >> 8 & 255}.{n & 255}"
            time.sleep(rng.uniform(0.0, 0.1))
            writer.append(login_line(ip))
            appended = time.monotonic()
            found = lambda ip=ip: postmap(directory / "postfix", ask, ip)  # noqa: E731
            results.append(seconds_until(found, appended, args.timeout))
    finally:
        daemon.stop()
    seen_ms = [r * 1000 for r in results if r is not None]
    return {
        "measure": f"login→relay latency ({label}, idle log)",
        "value": f"p50 {percentile(seen_ms, 50):.1f} ms, p99 {percentile(seen_ms, 99):.1f} ms, "
        f"max {max(seen_ms, default=float('nan')):.1f} ms",
        "detail": f"{len(results)} logins, {len(results) - len(seen_ms)} lost; "
        f"polled with postmap -q; {args.preload} grants",
    }


def prepare(directory: Path, args: argparse.Namespace) -> None:
    (directory / "postfix").mkdir()
    (directory / "postfix" / "main.cf").write_text("")
    preload(directory, args.preload, 3600.0)


def through_front(base: Path, table: Path, pg_dir: Path, args: argparse.Namespace) -> Dict:
    """The POP/IMAP host writes the table; a socketmap front answers postmap -q."""
    front = base / "front"
    sockets = front / "run"
    sockets.mkdir(parents=True)
    shutil.chown(sockets, group="postfix")
    sockets.chmod(0o750)
    socketmap = f"socketmap:unix:{sockets}/socketmap:popbsmtp"
    config = write_config(front, map=socketmap, grants_from=f"pgsql:{table}", max_entries=2_000_000)
    log(f"front: {args.logins} logins, {args.preload} preloaded grants")
    with Daemon(config):
        return measure(pg_dir, f"pgsql:{table}", args, "pgsql → socketmap front", socketmap)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logins", type=int, default=200)
    parser.add_argument("--preload", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--front", action="store_true", help="poll a socketmap front")
    args = parser.parse_args(argv)
    rows = []
    base = workdir("pgsql")
    server = started(base)
    try:
        pg_dir = base / "pgsql-host"
        pg_dir.mkdir()
        prepare(pg_dir, args)
        table = pg_dir / "pgsql.cf"
        subprocess.run(
            [sys.executable, "-m", "popbsmtp", "pgsql-init", "--dsn", server.dsn, str(table)],
            check=True,
            cwd=ROOT,
        )
        if args.front:
            rows.append(through_front(base, table, pg_dir, args))
            rows[-1]["detail"] = f"{rows[-1]['detail']} (PostgreSQL 15, LISTEN/NOTIFY)"
            emit(rows)
            return 0
        log(f"pgsql: {args.logins} logins, {args.preload} preloaded grants")
        rows.append(measure(pg_dir, f"pgsql:{table}", args, "pgsql"))
        count = server.sql("SELECT count(*) FROM popbsmtp_grants")[0][0]
        rows[-1]["detail"] = f"{rows[-1]['detail']} ({count} rows in PostgreSQL 15)"
    finally:
        server.stop()
    lmdb_dir = base / "lmdb-host"
    lmdb_dir.mkdir()
    prepare(lmdb_dir, args)
    log(f"lmdb: {args.logins} logins, {args.preload} preloaded grants")
    rows.append(measure(lmdb_dir, f"lmdb:{lmdb_dir}/pbs", args, "lmdb, same loop"))
    shutil.rmtree(base, ignore_errors=True)
    emit(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
