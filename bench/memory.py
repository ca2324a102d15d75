#!/usr/bin/env python3
"""Memory with many active grants: a real daemon fed N logins from N distinct addresses.

The log holds ``N`` login lines in the shape of the first example of
``--profile`` (default dovecot, whose logins open tracked sessions;
teapop's do not), one per address; the daemon starts on it with no saved state,
grants them all and writes them to its lmdb table.  Reported: the peak RSS
(VmHWM, includes catching up with the log), the RSS once settled (and what
it is made of: anonymous memory, mapped files such as the LMDB table), and
the table file size.  ``max_entries`` is raised above N for the run.

With ``--restart`` the daemon is then started again on its saved state (the
position is at the end of the log, so it reads nothing): a second row with
that start's peak, since loading a big snapshot and reconciling the table
count towards the maximum RSS too.

With ``--logouts`` (dovecot only) every login is followed by its logout:
the sessions are closed and each address keeps its grant for ``grace``, the
usual state of a server whose users fetch their mail and leave; without it
every session stays open (the worst case: one open session per grant).

    memory.py [--grants 100000 1000000] [--profile dovecot] [--restart] [--logouts]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

from common import Daemon, emit, log, workdir, write_config
from gen_maillog import Template, _template, stamp_text
from lmdbread import TableReader

from popbsmtp.profiles import LOGIN, registry


def address(n: int) -> str:
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" if n < 1 << 24 else f"2001:db8::{n:x}"


def shape(profile: str) -> Template:
    for example in registry()[profile].examples:
        found = _template(example, LOGIN)
        if found is not None and not found.ipv6:
            return found
    raise SystemExit(f"profile {profile} has no plain IPv4 login example")


def write_log(path: str, count: int, template: Template, logouts: bool = False) -> None:
    """One login per address; a Dovecot-style session id is made unique per line."""
    now = time.time()
    tail = re.sub(r"session=<[^>]*>", "session=<M{n:015d}>", template.tail.replace("{", "{{"))
    prefix = template.head[: template.head.index(": ") + 2]  # "mail dovecot: "

    def lines(n: int) -> str:
        stamp = stamp_text(now - count / 1000 + n / 1000, "rfc3339")
        login = f"{stamp} {template.head}{address(n + 1)}{tail.format(n=n)}\n"
        if not logouts:
            return login
        return login + (
            f"{stamp} {prefix}imap(user{n})<{n % 60000 + 1}><M{n:015d}>: "
            "Disconnected: Logged out in=12 out=477 deleted=0 expunged=0 trashed=0\n"
        )

    with open(path, "w") as handle:
        for start in range(0, count, 10_000):
            handle.write("".join(lines(n) for n in range(start, min(count, start + 10_000))))


def measure(count: int, profile: str, restart: bool, logouts: bool) -> List[Dict[str, object]]:
    directory = workdir(f"mem-{count}")
    try:
        write_log(str(directory / "mail.log"), count, shape(profile), logouts)
        kind = f"{profile} logins" + (" and logouts" if logouts else "")
        rows = [first_start(directory, count, profile, kind)]
        if restart:
            rows.append(restarted(directory, count, profile, kind))
        return rows
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def configure(directory: Path, count: int, profile: str, level: str) -> Path:
    return write_config(
        directory,
        grace="2h",
        max_session="1s",
        max_entries=count + 10,
        log_level=level,
        profiles=profile,
    )


def first_start(directory: Path, count: int, profile: str, kind: str) -> Dict[str, object]:
    """No saved state: the daemon catches up with the whole log."""
    daemon = Daemon(configure(directory, count, profile, "warning")).start(wait_ready=False)
    table = directory / "pbs.lmdb"
    deadline = time.monotonic() + 600
    reader = None
    while time.monotonic() < deadline:
        if reader is None and table.exists():
            reader = TableReader(str(table))
        if reader is not None and reader.count() >= count:
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - daemon.started
    time.sleep(3)  # let the post-batch state save run
    figures = footprint(daemon)
    entries = reader.count() if reader else 0
    if reader:
        reader.close()
    daemon.stop()
    return {
        "measure": f"memory, {count:,} active grants ({kind})",
        "value": figures[0],
        "detail": f"table {os.path.getsize(table) / 1e6:.0f} MB ({entries:,} keys), {figures[1]}, "
        + (
            f"all granted {elapsed:.1f} s after start"
            if entries >= count
            else f"TIMED OUT: only {entries:,} granted after {elapsed:.0f} s"
        ),
    }


def restarted(directory: Path, count: int, profile: str, kind: str) -> Dict[str, object]:
    """The same daemon started again on its saved state (sessions are not saved)."""
    state = directory / "state" / "state.json"
    size = os.path.getsize(state)
    # "following" is logged at info, once the state is loaded and the table reconciled.
    daemon = Daemon(configure(directory, count, profile, "info")).start(wait_ready=True)
    ready = time.monotonic() - daemon.started
    time.sleep(3)
    figures = footprint(daemon)
    daemon.stop()
    return {
        "measure": f"memory, restart with {count:,} saved grants ({kind})",
        "value": figures[0],
        "detail": f"state {size / 1e6:.0f} MB, {figures[1]}, following the log {ready:.1f} s "
        "after start",
    }


def footprint(daemon: Daemon) -> Tuple[str, str]:
    """(peak and settled RSS, what the settled RSS is made of) of a running daemon."""
    peak, settled = daemon.max_rss_kib(), rss_now(daemon)
    anon, mapped = rss_now(daemon, "RssAnon"), rss_now(daemon, "RssFile")
    return (
        f"peak RSS {peak / 1024:.0f} MiB, settled {settled / 1024:.0f} MiB",
        f"settled = {anon / 1024:.0f} MiB heap + {mapped / 1024:.0f} MiB mapped files "
        "(libraries, the LMDB table)",
    )


def rss_now(daemon: Daemon, field: str = "VmRSS") -> int:
    """KiB of ``field`` in /proc/PID/status (RssAnon, RssFile: what the RSS is made of)."""
    assert daemon.proc is not None
    with open(f"/proc/{daemon.proc.pid}/status") as handle:
        for line in handle:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return -1


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grants", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--profile", default="dovecot")
    parser.add_argument(
        "--restart", action="store_true", help="also start again on the saved state, and measure"
    )
    parser.add_argument(
        "--logouts", action="store_true", help="dovecot: each login followed by its logout"
    )
    args = parser.parse_args(argv)
    if args.logouts and args.profile != "dovecot":
        parser.error("--logouts writes Dovecot logout lines: use it with --profile dovecot")
    rows: List[Dict[str, object]] = []
    for count in args.grants:
        log(f"memory: {count} grants")
        rows += measure(count, args.profile, args.restart, args.logouts)
        log(str(rows[-1]))
    emit(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
