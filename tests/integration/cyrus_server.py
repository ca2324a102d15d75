"""Run a real Cyrus IMAP (imapd + pop3d) on loopback in a temporary directory.

Debian's cyrus-imapd/cyrus-pop3d *conflict* with dovecot-imapd/dovecot-pop3d
(all provide imap-server/pop3-server), and the suite needs Dovecot installed,
so Cyrus is never installed: ``.ci/setup`` unpacks the Debian packages
(``dpkg-deb -x``) into :data:`CYRUS_ROOT` and this harness runs the binaries
from there with ``LD_LIBRARY_PATH``, its own ``imapd.conf``/``cyrus.conf``,
a SASL database made by the unpacked ``saslpasswd2``, and ``cyrus_user:
nobody``.  Cyrus logs only through syslog(3): the master runs in a private
mount namespace whose ``/dev/log`` is the socket of a private rsyslogd writing
the RFC 3339 and traditional mail logs.  Nothing outside the work directory
(which must be traversable by ``nobody``) is touched.  Not a pytest fixture.
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

CYRUS_ROOT = Path(os.environ.get("POPBSMTP_CYRUS_ROOT", "/var/cache/popbsmtp-ci/cyrus"))
BIN = CYRUS_ROOT / "usr/lib/cyrus/bin"
LIBS = [CYRUS_ROOT / "usr/lib/x86_64-linux-gnu", CYRUS_ROOT / "lib/x86_64-linux-gnu"]
DEADLINE = 15.0

# Inside `unshare --mount`: hide the host's /dev behind a tmpfs with the few nodes
# Cyrus needs, and make /dev/log our rsyslogd's socket.
_NAMESPACE = """\
set -eu
hostdev="$1"; logsock="$2"; shift 2
mount --bind /dev "$hostdev"
mount -t tmpfs -o mode=0755,nosuid,size=64k popbsmtp-cyrus-dev /dev
for node in null zero random urandom; do
    : > "/dev/$node"; mount --bind "$hostdev/$node" "/dev/$node"
done
: > /dev/log
mount --bind "$logsock" /dev/log
umount -l "$hostdev"
exec "$@"
"""


def _require() -> None:
    missing = [p for p in (BIN / "master", BIN / "imapd", BIN / "pop3d") if not p.exists()]
    if missing or shutil.which("rsyslogd") is None or shutil.which("unshare") is None:
        raise RuntimeError(
            f"Cyrus is not unpacked in {CYRUS_ROOT} (or rsyslogd/unshare missing): "
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


class CyrusServer:
    """Cyrus imapd and pop3d on 127.0.0.1 and ::1; ``rfc3339_log``/``traditional_log``."""

    def __init__(self, work_dir: Path, users: Dict[str, str]) -> None:
        self.dir = Path(work_dir)
        self.users = users
        self.imap_port = _free_port()
        self.pop3_port = _free_port()
        self.rfc3339_log = self.dir / "mail.log"
        self.traditional_log = self.dir / "mail-traditional.log"
        self._procs: List[subprocess.Popen] = []
        self._env = dict(os.environ, LD_LIBRARY_PATH=":".join(map(str, LIBS)))

    def __enter__(self) -> CyrusServer:
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
        self.dir.chmod(0o755)  # nobody must reach the spool and config
        try:
            self._write_files()
            self._start(["rsyslogd", "-n", "-f", str(self.dir / "rsyslog.conf"),
                         "-i", str(self.dir / "rsyslogd.pid")])  # fmt: skip
            _poll((self.dir / "log.sock").exists, "rsyslogd's socket")
            master = [
                str(BIN / "master"),
                "-C",
                str(self.dir / "imapd.conf"),
                "-M",
                str(self.dir / "cyrus.conf"),
                "-p",
                str(self.dir / "master.pid"),
            ]
            self._start(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                         _NAMESPACE, "ns", str(self.dir / "hostdev"), str(self.dir / "log.sock"),
                         *master])  # fmt: skip
            _poll(lambda: _listening(self.imap_port) and _listening(self.pop3_port), "Cyrus")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM the master, wait until its last line is logged, then stop rsyslogd."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=DEADLINE)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=DEADLINE)
            if proc is self._procs[-1] and len(self._procs) > 1:
                # rsyslogd is still up: let it write the master's farewell.
                with contextlib.suppress(TimeoutError):
                    _poll(lambda: "closing down" in self.log_text(), "Cyrus master's last line")
        self._procs.clear()

    def log_text(self) -> str:
        try:
            return self.traditional_log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, predicate: Callable[[str], bool], what: str) -> None:
        _poll(lambda: predicate(self.log_text()), what)

    def _start(self, argv: List[str]) -> None:
        out = open(self.dir / f"{Path(argv[0]).name}.out", "wb")  # noqa: SIM115
        with out:
            self._procs.append(
                subprocess.Popen(argv, env=self._env, stdout=out, stderr=subprocess.STDOUT)
            )

    def _write_files(self) -> None:
        d = self.dir
        (d / "hostdev").mkdir()
        for sub in ("db", "proc", "socket", "lock", "log", "user", "quota", "sieve", "msg",
                    "ptclient"):  # fmt: skip
            (d / "conf" / sub).mkdir(parents=True)
        (d / "spool").mkdir()
        (d / "imapd.conf").write_text(
            f"configdirectory: {d}/conf\npartition-default: {d}/spool\nservername: mail\n"
            f"sasl_pwcheck_method: auxprop\nsasl_auxprop_plugin: sasldb\n"
            f"sasl_sasldb_path: {d}/sasldb2\nsasl_mech_list: PLAIN LOGIN\n"
            "allowplaintext: yes\ncyrus_user: nobody\ncyrus_group: nogroup\n"
        )
        imapd, pop3d = f"{BIN}/imapd -C {d}/imapd.conf", f"{BIN}/pop3d -C {d}/imapd.conf"
        (d / "cyrus.conf").write_text(
            "START {\n"
            f'  recover cmd="{BIN}/ctl_cyrusdb -C {d}/imapd.conf -r"\n}}\n'
            "SERVICES {\n"
            f'  imap cmd="{imapd}" listen="127.0.0.1:{self.imap_port}" prefork=0\n'
            f'  imap6 cmd="{imapd}" listen="[::1]:{self.imap_port}" prefork=0\n'
            f'  pop3 cmd="{pop3d}" listen="127.0.0.1:{self.pop3_port}" prefork=0\n'
            f'  pop36 cmd="{pop3d}" listen="[::1]:{self.pop3_port}" prefork=0\n}}\n'
            "EVENTS {\n}\nDAEMON {\n}\n"
        )
        (d / "rsyslog.conf").write_text(
            f'global(workDirectory="{d}")\n'
            'module(load="imuxsock" SysSock.Use="off")\n'
            f'input(type="imuxsock" Socket="{d}/log.sock")\n'
            f'*.* action(type="omfile" file="{self.rfc3339_log}" template="RSYSLOG_FileFormat")\n'
            f'*.* action(type="omfile" file="{self.traditional_log}" '
            'template="RSYSLOG_TraditionalFileFormat")\n'
        )
        for user, password in self.users.items():
            subprocess.run(
                [str(CYRUS_ROOT / "usr/sbin/saslpasswd2"), "-p", "-c", "-f", f"{d}/sasldb2",
                 "-u", "mail", user],
                input=password.encode(), env=self._env, check=True, capture_output=True,
            )  # fmt: skip
        subprocess.run(["chown", "-R", "nobody:nogroup", str(d / "conf"), str(d / "spool"),
                        str(d / "sasldb2")], check=True)  # fmt: skip
