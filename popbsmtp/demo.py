"""``popbsmtp demo``: the daemon on a demo log and an lmdb map, for newcomers.

Creates ``./popbsmtp-demo`` with a config, an empty mail log and a state
directory, runs the real daemon on it, and appends a Dovecot login line
every 20 seconds from a new documentation address (grace: 1 minute), so
one sees clients being authorized and expiring, and how to ask Postfix.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time

from popbsmtp import config, logsetup
from popbsmtp.service import Service

LOGIN = (
    "{stamp} demo dovecot: imap-login: Login: user=<demo{n}>, method=PLAIN, rip={ip}, "
    "lip=192.0.2.1, mpid={pid}, TLS, session=<demoSession{n:04d}>\n"
)


def _write_config(directory: str) -> str:
    path = os.path.join(directory, "popbsmtp.conf")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(
            "[popbsmtp]\n"
            f"logfile = {directory}/mail.log\n"
            f"map = lmdb:{directory}/pop-before-smtp\n"
            f"state_dir = {directory}/state\n"
            "grace = 1m\n"
            "ignore_networks = none\n"
        )
    return path


def _feeder(logfile: str, stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        ip = f"192.0.2.{10 + n % 200}"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000%z")
        stamp = stamp[:-2] + ":" + stamp[-2:]
        with open(logfile, "a", encoding="utf-8") as handle:
            handle.write(LOGIN.format(stamp=stamp, n=n, ip=ip, pid=1000 + n))
        print(
            f"\n>>> appended a Dovecot login from {ip}; ask Postfix with:\n"
            f"    postmap -q {ip} lmdb:{os.path.dirname(logfile)}/pop-before-smtp\n",
            file=sys.stderr,
            flush=True,
        )
        stop.wait(20)


def run_demo(directory: str, duration: float) -> int:
    directory = os.path.abspath(directory)
    os.makedirs(directory, mode=0o750, exist_ok=True)
    os.chmod(directory, 0o750)  # noqa: S103 - the state dir must not be world-readable
    open(os.path.join(directory, "mail.log"), "a").close()
    settings = config.load(_write_config(directory))
    logsetup.setup("info")
    print(f"popbsmtp demo in {directory} (grace 1 minute). Ctrl-C to stop.", file=sys.stderr)
    if not shutil.which("postmap"):
        print(
            "(install Postfix to query the map: apt-get install postfix postfix-lmdb)",
            file=sys.stderr,
        )
    service = Service(settings)
    stop = threading.Event()
    feeder = threading.Thread(target=_feeder, args=(settings.logfile, stop), daemon=True)

    def on_signal(_signum: int, _frame: object) -> None:
        service.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if duration:
        threading.Timer(duration, service.stop).start()
    try:
        service.run(on_ready=feeder.start)
    finally:
        stop.set()
    return 0
