"""A private systemd-journald for tests, and the runner that feeds it.

journald runs without systemd as PID 1: in its own mount namespace, a tmpfs
on /run, its socket directory (/run/systemd/journal) bound from ``sockets``
so the sockets are reachable from outside, its journal (/run/log/journal)
bound from ``journal_dir``, and a journald.conf of our own (volatile, no
rate limit, no forwarding).  ``inside(argv)`` runs a command in a private
mount namespace whose /dev/log is that journald's syslog socket, as
:class:`sandbox.PrivateSyslog` does for rsyslogd, so a server harness can use
either.  Nothing here touches the host's journal, /dev/log or /run.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Type, TypeVar

from sandbox import _NAMESPACE_SCRIPT, SyslogServer, poll, require, spawn, stop_process

S = TypeVar("S", bound=SyslogServer)

JOURNALD = "/lib/systemd/systemd-journald"
_JOURNALD_SCRIPT = """\
set -eu
sockets="$1"; journal="$2"; conf="$3"
mount -t tmpfs -o mode=0755 popbsmtp-run /run
mkdir -p /run/systemd/journal /run/log/journal
mount --bind "$sockets" /run/systemd/journal
mount --bind "$journal" /run/log/journal
mount --bind "$conf" /etc/systemd/journald.conf
exec "$4"
"""
_CONF = """\
[Journal]
Storage=volatile
RateLimitIntervalSec=0
RateLimitBurst=0
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
ReadKMsg=no
"""


class PrivateJournal:
    """A private journald under directory; ``journal_dir`` is what ``journalctl -D`` reads.

    ``socket`` is the path servers' /dev/log is bound to (a symlink to journald's
    dev-log socket; settable before start(), as for PrivateSyslog).
    """

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.journal_dir = self.dir / "journal"
        # A unix socket path has at most 107 bytes: the sockets live in a short directory.
        self._sockets = Path(tempfile.mkdtemp(prefix="pbs-jd-"))
        self.socket = self._sockets / "log.sock"
        self.dev_log = self._sockets / "journal" / "dev-log"  # journald's syslog socket
        self.rfc3339_log = self.traditional_log = self.dir / "no-such-file.log"
        self._proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        require("unshare", "util-linux")
        require("journalctl", "systemd")
        if not os.path.exists(JOURNALD):
            raise RuntimeError(f"{JOURNALD} not found; install the Debian package systemd")
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        (self._sockets / "journal").mkdir(parents=True, exist_ok=True)
        conf = self.dir / "journald.conf"
        conf.write_text(_CONF)
        argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                _JOURNALD_SCRIPT, "sh", str(self._sockets / "journal"), str(self.journal_dir),
                str(conf), JOURNALD]  # fmt: skip
        self._proc = spawn(argv, self.dir / "journald.out")
        proc = self._proc
        dev_log = self.dev_log
        poll(
            lambda: dev_log.exists() and stat.S_ISSOCK(dev_log.stat().st_mode),
            "journald's syslog socket",
            alive=lambda: proc.poll() is None,
        )
        if self.socket != dev_log:
            if self.socket.is_symlink() or self.socket.exists():
                self.socket.unlink()
            self.socket.symlink_to(dev_log)

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None
        shutil.rmtree(self._sockets, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self.running and self._proc is not None else None

    def inside(self, argv: List[str]) -> List[str]:
        """argv run in a private mount namespace whose /dev/log is our journald's."""
        hostdev = self.dir / "hostdev"
        hostdev.mkdir(exist_ok=True)
        return ["unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", _NAMESPACE_SCRIPT, "sh", str(hostdev), str(self.socket),
                *argv]  # fmt: skip

    def entries(self) -> List[Dict[str, object]]:
        """Every entry so far, as journalctl -o json prints them."""
        out = subprocess.run(
            ["journalctl", f"--directory={self.journal_dir}", "--output=json", "--all",
             "--no-pager"],
            capture_output=True, check=True, timeout=30,
        ).stdout  # fmt: skip
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def messages(self) -> List[str]:
        """``IDENTIFIER: MESSAGE`` of every entry, in journal order."""
        return [f"{e.get('SYSLOG_IDENTIFIER', '')}: {e.get('MESSAGE', '')}" for e in self.entries()]

    def forge(self, uid: int, tag: str, message: str) -> None:
        """Send message with tag from an unprivileged uid, as any local user can."""
        argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                "logger", "-t", tag, message]  # fmt: skip
        subprocess.run(self.inside(argv), check=True, capture_output=True, timeout=30)


def journalled(server_class: Type[S]) -> Type[S]:
    """server_class (a SyslogServer: Cyrus, Courier) logging into a PrivateJournal
    instead of rsyslogd; its log_text() is the journal's messages."""

    class Journalled(server_class):  # type: ignore[valid-type,misc]
        def __init__(self, work_dir: Path, users: Dict[str, str]) -> None:
            super().__init__(work_dir, users)
            self.syslog = PrivateJournal(self.dir / "journald")

        def log_text(self) -> str:
            if not self.syslog.journal_dir.exists():
                return ""
            return "\n".join(self.syslog.messages())

    Journalled.__name__ = "Journalled" + server_class.__name__
    return Journalled
