"""README's first command: the demo tells the whole story on a machine whose Postfix has
no main.cf: a grant, a query that answers, the logout, the expiry, and times that agree
with ``popbsmtp list``."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

from postfix_instance import require
from support import wait_for

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


def _postmap(command: str) -> subprocess.CompletedProcess:
    """Run the query the demo printed, exactly as printed (postmap from /usr/sbin)."""
    words = command.split()
    words[0] = require("postmap")
    return subprocess.run(words, capture_output=True, text=True, timeout=30)


def test_demo_grants_answers_and_expires(pf_tmp):
    demo = pf_tmp / "demo"
    err = pf_tmp / "demo.err"
    with open(err, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "popbsmtp", "demo", "--dir", str(demo), "--duration", "90"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=pf_tmp,
        )
    try:
        text = lambda: err.read_text()  # noqa: E731
        found = wait_for(
            lambda: re.search(r"    (postmap -c \S+ -q (\S+) (lmdb:\S+))", text()),
            20,
            0.1,
            "the printed postmap command",
        )
        command, ip, table = found.groups()
        assert table == f"lmdb:{demo}/pop-before-smtp"
        granted = wait_for(
            lambda: re.search(
                rf"granted {re.escape(ip)} while its session is open, at most until ({STAMP})",
                text(),
            ),
            10,
            0.05,
            "the grant",
        )
        answer = _postmap(command)
        assert (answer.returncode, answer.stdout, answer.stderr) == (0, "OK\n", "")
        listed = subprocess.run(
            [sys.executable, "-m", "popbsmtp", "list", "-c", str(demo / "popbsmtp.conf")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert f"{ip:<40} until {granted.group(1)}" in listed.stdout, (listed.stdout, text())

        ended = wait_for(
            lambda: re.search(
                rf"session of {re.escape(ip)} ended; may relay until ({STAMP})", text()
            ),
            20,
            0.05,
            "the logout",
        )
        said = re.search(
            rf"{re.escape(ip)}'s logout line.*?may relay until ({STAMP})", text(), re.S
        )
        listed = subprocess.run(
            [sys.executable, "-m", "popbsmtp", "list", "-c", str(demo / "popbsmtp.conf")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert f"{ip:<40} until {ended.group(1)}" in listed.stdout, (listed.stdout, text())
        assert (
            said is not None
            and abs(
                time.mktime(time.strptime(said.group(1), "%Y-%m-%d %H:%M:%S"))
                - time.mktime(time.strptime(ended.group(1), "%Y-%m-%d %H:%M:%S"))
            )
            <= 1
        ), text()
        assert _postmap(command).returncode == 0, "still granted during grace"

        wait_for(lambda: f"expired {ip}" in text(), 45, 0.1, "the expiry")
        gone = _postmap(command)
        assert (gone.returncode, gone.stdout, gone.stderr) == (1, "", ""), text()
        assert "Traceback" not in text() and "fatal" not in text()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, err.read_text()
