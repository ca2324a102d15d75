"""Regenerate the captured Cyrus and Courier sample logs in tests/profiles/data.

Usage: python3 tests/integration/capture_servers.py OUTDIR   (as root, after .ci/setup)

Runs the scripted logins of test_cyrus_real.py / test_courier_real.py against the
real servers (Debian 12's unpacked, Debian 13's in their trixie trees) and writes
their RFC 3339 and traditional mail logs as captured; tests/profiles/test_captured.py
then checks them.  Then, for each server, a session of each protocol is held open
while the server is stopped, Dovecot 2.3 and 2.4 included: ``NAME-VERSION-shutdown.log``
holds what the server writes when it stops with clients logged in (its shutdown lines).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Type

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]

import test_courier_real  # noqa: E402
import test_cyrus_real  # noqa: E402
from courier_server import Courier52Server, CourierServer  # noqa: E402
from cyrus_server import Cyrus310Server, CyrusServer  # noqa: E402
from dovecot_server import DovecotServer  # noqa: E402
from login_script import scripted_run, stop_with_sessions_open  # noqa: E402
from sandbox import SyslogServer  # noqa: E402


def capture(server_class, module, name: str, out: Path) -> None:
    attempts = getattr(module, "attempts", lambda _: module.ATTEMPTS)(server_class)
    with scripted_run(server_class, module.USERS, attempts, module.settled) as run:
        shutil.copy(run.server.rfc3339_log, out / f"{name}-captured.log")
        shutil.copy(run.server.traditional_log, out / f"{name}-captured-traditional.log")


def capture_shutdown(server_class: Type[SyslogServer], name: str, out: Path) -> None:
    """Two sessions open (IMAP from 127.0.0.20, POP3 from ::1) when the server stops."""
    with tempfile.TemporaryDirectory(prefix="popbsmtp-shutdown-", dir="/tmp") as work:
        server = server_class(Path(work), {"alice": "alice-pw"})
        with server:
            stop_with_sessions_open(server, server.log_text)
        shutil.copy(server.rfc3339_log, out / f"{name}-shutdown.log")


def capture_dovecot_shutdown(version: str, out: Path) -> None:
    """The same for Dovecot (its RFC 3339 rsyslog file)."""
    with tempfile.TemporaryDirectory(prefix="popbsmtp-shutdown-", dir="/tmp") as work:
        users = {"alice": "alice-pw"}
        server = DovecotServer(Path(work), users=users, version=version, hostname="mail")
        with server:
            stop_with_sessions_open(server, lambda: "\n".join(server.read_log()))
        shutil.copy(server.active_log, out / f"dovecot-{version}-shutdown.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    out = parser.parse_args().outdir
    for server_class, module, name in (
        (CyrusServer, test_cyrus_real, "cyrus-3.6"),
        (Cyrus310Server, test_cyrus_real, "cyrus-3.10"),
        (CourierServer, test_courier_real, "courier-5.0"),
        (Courier52Server, test_courier_real, "courier-5.2"),
    ):
        capture(server_class, module, name, out)
        capture_shutdown(server_class, name, out)
    for version in ("2.3", "2.4"):
        capture_dovecot_shutdown(version, out)


if __name__ == "__main__":
    main()
