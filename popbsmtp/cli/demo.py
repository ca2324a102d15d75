"""``popbsmtp demo``: the daemon on a demo log and an lmdb map, for newcomers.

Creates ``./popbsmtp-demo`` with a config, an empty mail log, a state
directory and a Postfix configuration directory of its own (an empty
``main.cf``: the demo needs no configured Postfix), runs the real daemon on
it, and plays the story of one POP/IMAP session every 20 seconds: a Dovecot
login line from a new documentation address, and 10 seconds later the logout
line the real server writes.  The client may relay while its session is open
and for ``grace`` (30 seconds here) after the logout, then expires: all
within the first minute.  It does not touch the host's Postfix.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
import threading
import time

from popbsmtp import config
from popbsmtp.daemon import logsetup
from popbsmtp.daemon.service import Service
from popbsmtp.grants import when

GRACE = 30.0
SESSION = 10.0
EVERY = 20.0
LOGIN = (
    "{stamp} demo dovecot: imap-login: Login: user=<demo{n}>, method=PLAIN, rip={ip}, "
    "lip=192.0.2.1, mpid={pid}, TLS, session=<demoSession{n:04d}>\n"
)
LOGOUT = (
    "{stamp} demo dovecot: imap(demo{n})<{pid}><demoSession{n:04d}>: "
    "Disconnected: Logged out in=120 out=1024 deleted=0 expunged=0 trashed=0 "
    "hdr_count=0 hdr_bytes=0 body_count=0 body_bytes=0\n"
)


def _write_config(directory: str) -> str:
    postfix_dir = os.path.join(directory, "postfix")
    os.makedirs(postfix_dir, mode=0o755, exist_ok=True)
    main_cf = os.path.join(postfix_dir, "main.cf")
    if not os.path.exists(main_cf):
        with open(main_cf, "w", encoding="utf-8") as handle:
            handle.write("# popbsmtp demo: an empty main.cf, Postfix's built-in defaults\n")
    path = os.path.join(directory, "popbsmtp.conf")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(
            "[popbsmtp]\n"
            f"logfile = {directory}/mail.log\n"
            f"map = lmdb:{directory}/pop-before-smtp\n"
            f"postfix_config_dir = {postfix_dir}\n"
            f"state_dir = {directory}/state\n"
            f"grace = {GRACE:g}s\n"
            "ignore_networks = none\n"
        )
    return path


def _stamp() -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000%z")
    return stamp[:-2] + ":" + stamp[-2:]


class Feeder:
    """Plays one session every ``EVERY`` seconds and says what to look at."""

    def __init__(self, directory: str, conf: str, logfile: str, stop: threading.Event) -> None:
        self.logfile = logfile
        self.stop = stop
        table = f"lmdb:{directory}/pop-before-smtp"
        self.query = shlex.join(["postmap", "-c", os.path.join(directory, "postfix"), "-q"])
        self.table = table
        me = sys.argv[0] if os.path.basename(sys.argv[0]) == "popbsmtp" else "popbsmtp"
        self.list = shlex.join([me, "list", "-c", conf])

    def _append(self, text: str) -> None:
        with open(self.logfile, "a", encoding="utf-8") as handle:
            handle.write(text)

    def _say(self, text: str) -> None:
        print(f"\n>>> {text}\n", file=sys.stderr, flush=True)

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            ip, pid = f"192.0.2.{10 + n % 200}", 1000 + n
            self._append(LOGIN.format(stamp=_stamp(), n=n, ip=ip, pid=pid))
            self._say(
                f"appended a Dovecot login from {ip}: it may relay while its session is open."
                f"  Ask Postfix (answers OK):\n    {self.query} {ip} {self.table}\n"
                f"    or: {self.list}"
            )
            if self.stop.wait(SESSION):
                return
            self._append(LOGOUT.format(stamp=_stamp(), n=n, pid=pid))
            until = when(time.time() + GRACE)
            self._say(
                f"appended {ip}'s logout line (Dovecot's 'Disconnected: Logged out'): grace"
                f" starts now, so {ip} may relay until {until}.  After that the same query"
                " finds nothing"
            )
            if self.stop.wait(EVERY - SESSION):
                return


def run_demo(directory: str, duration: float) -> int:
    directory = os.path.abspath(directory)
    os.makedirs(directory, mode=0o750, exist_ok=True)
    os.chmod(directory, 0o750)  # noqa: S103 - the state dir must not be world-readable
    open(os.path.join(directory, "mail.log"), "a").close()
    conf = _write_config(directory)
    settings = config.load(conf)
    logsetup.setup("info")
    print(
        f"popbsmtp demo in {directory}: a POP/IMAP session every {EVERY:g}s, grace"
        f" {GRACE:g}s after each logout.  Ctrl-C to stop.",
        file=sys.stderr,
    )
    if not shutil.which("postmap") and not os.access("/usr/sbin/postmap", os.X_OK):
        print(
            "(install Postfix to query the map: apt-get install postfix postfix-lmdb)",
            file=sys.stderr,
        )
    service = Service(settings)
    stop = threading.Event()
    feeder = Feeder(directory, conf, settings.logfile, stop)
    thread = threading.Thread(target=feeder.run, daemon=True)

    def on_signal(_signum: int, _frame: object) -> None:
        service.requests.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if duration:
        timer = threading.Timer(duration, service.requests.stop)
        timer.daemon = True
        timer.start()
    try:
        service.run(on_ready=thread.start)
    finally:
        stop.set()
    return 0
