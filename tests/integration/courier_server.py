"""Run a real Courier-IMAP and Courier POP3 on loopback in a temporary directory.

Debian's courier-imap/courier-pop *conflict* with dovecot-imapd/dovecot-pop3d
(all provide imap-server/pop3-server), and the suite needs Dovecot installed,
so Courier is never installed: ``.ci/setup`` unpacks the Debian packages into
:data:`COURIER_ROOT`.  Courier's programs have their paths compiled in
(``/etc/courier``, ``/usr/lib/courier-authlib``, ``/run/courier/authdaemon``),
so everything runs in a private mount namespace where ``/usr`` and ``/etc``
are overlays with the unpacked tree on top (writes go to the work
directory), ``/run`` is a tmpfs and ``/dev/log`` is a private rsyslogd's
socket.  Users live in a userdb (``makeuserdb``) with uid ``nobody`` and a
Maildir in the work directory; ``courierlogger`` turns the login programs'
stderr into syslog lines tagged ``imapd``/``pop3d`` exactly as Debian's init
scripts do.  Nothing outside the work directory is changed.  Not a fixture.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Callable, Dict, List, Optional, Type

COURIER_ROOT = Path(os.environ.get("POPBSMTP_COURIER_ROOT", "/var/cache/popbsmtp-ci/courier"))
DEADLINE = 15.0

# $1 work dir, $2 unpacked root, $3 imap port, $4 pop3 port.
_NAMESPACE = """\
set -eu
W="$1"; R="$2"; IMAP="$3"; POP3="$4"; LOGIN=/usr/lib/courier/courier
mount --bind /dev "$W/hostdev"
mount -t tmpfs -o mode=0755,nosuid,size=64k popbsmtp-courier-dev /dev
for node in null zero random urandom; do
    : > "/dev/$node"; mount --bind "$W/hostdev/$node" "/dev/$node"
done
: > /dev/log
mount --bind "$W/log.sock" /dev/log
umount -l "$W/hostdev"
mount -t overlay popbsmtp-etc -o "lowerdir=$R/etc:/etc,upperdir=$W/etc-up,workdir=$W/etc-work" /etc
mount -t overlay popbsmtp-usr -o "lowerdir=$R/usr:/usr,upperdir=$W/usr-up,workdir=$W/usr-work" /usr
mount -t tmpfs -o mode=0755 popbsmtp-run /run
mkdir -p /run/courier/authdaemon
cp "$W/userdb" /etc/courier/userdb && chmod 600 /etc/courier/userdb
makeuserdb
cp "$W/authdaemonrc" /etc/courier/authdaemonrc
/usr/lib/courier/courier-authlib/authdaemond &
set +u; set -a
. /etc/courier/imapd; . /etc/courier/imapd-ssl; . /etc/courier/pop3d
IMAP_ENHANCEDIDLE=0
set +a; set -u
for address in 127.0.0.1 ::1; do
    courierlogger -name=imapd couriertcpd -address=$address -nodnslookup -noidentlookup \\
        "$IMAP" "$LOGIN/imaplogin" /usr/bin/imapd Maildir &
    courierlogger -name=pop3d couriertcpd -address=$address -nodnslookup -noidentlookup \\
        "$POP3" "$LOGIN/courierpop3login" "$LOGIN/courierpop3d" Maildir &
done
wait
"""


def _require() -> None:
    needed = [COURIER_ROOT / "usr/sbin/couriertcpd", COURIER_ROOT / "usr/bin/imapd"]
    if not all(p.exists() for p in needed) or not shutil.which("rsyslogd"):
        raise RuntimeError(
            f"Courier is not unpacked in {COURIER_ROOT} (or rsyslogd missing): "
            "run .ci/setup as root"
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
        probe.bind(("::1", 0))
        return int(probe.getsockname()[1])


def _poll(ready: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not ready():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _listening(port: int) -> bool:
    for host in ("127.0.0.1", "::1"):
        try:
            socket.create_connection((host, port), 0.5).close()
        except OSError:
            return False
    return True


class CourierServer:
    """Courier imapd and pop3d on 127.0.0.1 and ::1; ``rfc3339_log``/``traditional_log``."""

    def __init__(self, work_dir: Path, users: Dict[str, str]) -> None:
        self.dir = Path(work_dir)
        self.users = users
        self.imap_port = _free_port()
        self.pop3_port = _free_port()
        self.rfc3339_log = self.dir / "mail.log"
        self.traditional_log = self.dir / "mail-traditional.log"
        self._rsyslog: Optional[subprocess.Popen] = None
        self._courier: Optional[subprocess.Popen] = None

    def __enter__(self) -> CourierServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    def start(self) -> None:
        _require()
        self.dir.chmod(0o755)  # nobody must reach the Maildirs
        try:
            self._write_files()
            self._rsyslog = self._spawn(
                ["rsyslogd", "-n", "-f", str(self.dir / "rsyslog.conf"),
                 "-i", str(self.dir / "rsyslogd.pid")], "rsyslogd.out", new_session=False,
            )  # fmt: skip
            _poll((self.dir / "log.sock").exists, "rsyslogd's socket")
            self._courier = self._spawn(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", _NAMESPACE,
                 "ns", str(self.dir), str(COURIER_ROOT), str(self.imap_port),
                 str(self.pop3_port)], "courier.out", new_session=True,
            )  # fmt: skip
            _poll(lambda: _listening(self.imap_port) and _listening(self.pop3_port), "Courier")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop Courier's whole process group (its own session), then rsyslogd."""
        if self._courier is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._courier.pid, signal.SIGTERM)
            try:
                self._courier.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._courier.pid, signal.SIGKILL)
                self._courier.wait(timeout=DEADLINE)
            # Children of the group that outlived the shell get the same treatment.
            with contextlib.suppress(TimeoutError):
                _poll(lambda: not _group_alive(self._courier.pid), "Courier's processes")  # type: ignore[union-attr]
            self._courier = None
        if self._rsyslog is not None:
            self._rsyslog.terminate()
            self._rsyslog.wait(timeout=DEADLINE)
            self._rsyslog = None

    def log_text(self) -> str:
        try:
            return self.traditional_log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, predicate: Callable[[str], bool], what: str) -> None:
        _poll(lambda: predicate(self.log_text()), what)

    def _spawn(self, argv: List[str], out: str, new_session: bool) -> subprocess.Popen:
        with open(self.dir / out, "wb") as handle:
            return subprocess.Popen(
                argv, stdout=handle, stderr=subprocess.STDOUT, start_new_session=new_session
            )

    def _write_files(self) -> None:
        d = self.dir
        for sub in ("hostdev", "etc-up", "etc-work", "usr-up", "usr-work", "home"):
            (d / sub).mkdir()
        env = dict(os.environ, LD_LIBRARY_PATH=str(COURIER_ROOT / "usr/lib/x86_64-linux-gnu"))
        lines = []
        for number, (user, password) in enumerate(self.users.items()):
            home = d / "home" / f"u{number}"
            subprocess.run([str(COURIER_ROOT / "usr/bin/maildirmake.courier"), str(home)],
                           env=env, check=True, capture_output=True)  # fmt: skip
            hashed = subprocess.run(
                [str(COURIER_ROOT / "usr/sbin/userdbpw"), "-md5"], input=password.encode() + b"\n",
                env=env, check=True, capture_output=True,
            ).stdout.decode().strip()  # fmt: skip
            fields = f"uid=65534|gid=65534|home={home}|mail={home}|imappw={hashed}|pop3pw={hashed}"
            lines.append(f"{user}\t{fields}\n")
        (d / "userdb").write_text("".join(lines))
        subprocess.run(["chown", "-R", "nobody:nogroup", str(d / "home")], check=True)
        (d / "authdaemonrc").write_text(
            'authmodulelist="authuserdb"\ndaemons=1\nauthdaemonvar=/run/courier/authdaemon\n'
            'DEBUG_LOGIN=0\nDEFAULTOPTIONS=""\nLOGGEROPTS=""\n'
        )
        (d / "rsyslog.conf").write_text(
            f'global(workDirectory="{d}")\n'
            'module(load="imuxsock" SysSock.Use="off")\n'
            f'input(type="imuxsock" Socket="{d}/log.sock")\n'
            f'*.* action(type="omfile" file="{self.rfc3339_log}" template="RSYSLOG_FileFormat")\n'
            f'*.* action(type="omfile" file="{self.traditional_log}" '
            'template="RSYSLOG_TraditionalFileFormat")\n'
        )


def _group_alive(pgid: int) -> bool:
    """Does a live (non-zombie) process remain in process group ``pgid``?"""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False
