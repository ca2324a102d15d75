#!/usr/bin/env python3
"""Memory with many active grants: a real daemon fed N logins from N distinct addresses.

The log holds ``N`` login lines in the shape of the first example of
``--profile`` (default dovecot, whose logins open tracked sessions;
teapop's do not), one per address; the daemon starts on it with no saved state,
grants them all and writes them to its lmdb table.  Reported: the peak RSS
(VmHWM, includes catching up with the log), the RSS once settled, and the
table file size.  ``max_entries`` is raised above N for the run.

    memory.py [--grants 100000 1000000] [--profile dovecot]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from typing import Dict, List

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


def write_log(path: str, count: int, template: Template) -> None:
    """One login per address; a Dovecot-style session id is made unique per line."""
    now = time.time()
    tail = re.sub(r"session=<[^>]*>", "session=<M{n:015d}>", template.tail.replace("{", "{{"))
    with open(path, "w") as handle:
        for start in range(0, count, 10_000):
            handle.write(
                "".join(
                    f"{stamp_text(now - count / 1000 + n / 1000, 'rfc3339')} "
                    f"{template.head}{address(n + 1)}{tail.format(n=n)}\n"
                    for n in range(start, min(count, start + 10_000))
                )
            )


def measure(count: int, profile: str) -> Dict[str, object]:
    directory = workdir(f"mem-{count}")
    try:
        write_log(str(directory / "mail.log"), count, shape(profile))
        config = write_config(
            directory,
            grace="2h",
            max_session="1s",
            max_entries=count + 10,
            log_level="warning",
            profiles=profile,
        )
        daemon = Daemon(config).start(wait_ready=False)
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
        peak, settled = daemon.max_rss_kib(), rss_now(daemon)
        entries = reader.count() if reader else 0
        if reader:
            reader.close()
        daemon.stop()
        return {
            "measure": f"memory, {count:,} active grants ({profile} logins)",
            "value": f"peak RSS {peak / 1024:.0f} MiB, settled {settled / 1024:.0f} MiB",
            "detail": f"table {os.path.getsize(table) / 1e6:.0f} MB ({entries:,} keys), "
            + (
                f"all granted {elapsed:.1f} s after start"
                if entries >= count
                else f"TIMED OUT: only {entries:,} granted after {elapsed:.0f} s"
            ),
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def rss_now(daemon: Daemon) -> int:
    assert daemon.proc is not None
    with open(f"/proc/{daemon.proc.pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grants", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--profile", default="dovecot")
    args = parser.parse_args(argv)
    rows = []
    for count in args.grants:
        log(f"memory: {count} grants")
        rows.append(measure(count, args.profile))
        log(str(rows[-1]))
    emit(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
