"""Regenerate the captured Cyrus and Courier sample logs in tests/profiles/data.

Usage: python3 tests/integration/capture_servers.py OUTDIR   (as root, after .ci/setup)

Runs the scripted logins of test_cyrus_real.py / test_courier_real.py against the
real (unpacked) servers and writes their RFC 3339 and traditional mail logs as
captured; tests/profiles/test_captured.py then checks them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]

import test_courier_real  # noqa: E402
import test_cyrus_real  # noqa: E402
from courier_server import CourierServer  # noqa: E402
from cyrus_server import CyrusServer  # noqa: E402
from login_script import scripted_run  # noqa: E402


def capture(server_class, module, name: str, out: Path) -> None:
    with scripted_run(server_class, module.USERS, module.ATTEMPTS, module.settled) as run:
        shutil.copy(run.server.rfc3339_log, out / f"{name}-captured.log")
        shutil.copy(run.server.traditional_log, out / f"{name}-captured-traditional.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    out = parser.parse_args().outdir
    capture(CyrusServer, test_cyrus_real, "cyrus-3.6", out)
    capture(CourierServer, test_courier_real, "courier-5.0", out)


if __name__ == "__main__":
    main()
