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

:class:`Cyrus310Server` runs Debian 13's Cyrus 3.10 the same way, installed in
the ``trixie-cyrus`` tree (see trixie.py) and chrooted there with the tree's
rsyslogd, a private ``/etc/hosts`` and a resolver that answers at once (Cyrus
looks up every client's name).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import trixie
from sandbox import PrivateSyslog, SyslogServer, poll, spawn, stop_process

CYRUS_ROOT = Path(os.environ.get("POPBSMTP_CYRUS_ROOT", "/var/cache/popbsmtp-ci/cyrus"))
BIN = CYRUS_ROOT / "usr/lib/cyrus/bin"
LIBS = [CYRUS_ROOT / "usr/lib/x86_64-linux-gnu", CYRUS_ROOT / "lib/x86_64-linux-gnu"]


class CyrusServer(SyslogServer):
    """Cyrus imapd and pop3d on 127.0.0.1 and ::1; ``rfc3339_log``/``traditional_log``."""

    VERSION = "3.6"

    def __init__(self, work_dir: Path, users: Dict[str, str]) -> None:
        super().__init__(work_dir, users)
        self._master: Optional[subprocess.Popen] = None
        self._env = dict(os.environ, LD_LIBRARY_PATH=":".join(map(str, LIBS)))
        self.bin, self.saslpasswd2 = BIN, CYRUS_ROOT / "usr/sbin/saslpasswd2"

    def _require(self) -> None:
        missing = [p for p in (BIN / "master", BIN / "imapd", BIN / "pop3d") if not p.exists()]
        if missing:
            raise RuntimeError(f"Cyrus is not unpacked in {CYRUS_ROOT}: run .ci/setup as root")

    def _tool(self, argv: List[str]) -> List[str]:
        """argv of one of Cyrus's own programs, run where the server runs."""
        return argv

    def _launch(self) -> None:
        d = self.dir
        master = [str(self.bin / "master"), "-C", str(d / "imapd.conf"), "-M",
                  str(d / "cyrus.conf"), "-p", str(d / "master.pid")]  # fmt: skip
        self._master = spawn(self._inside(master), d / "master.out", env=self._env)

    def _inside(self, argv: List[str]) -> List[str]:
        return self.syslog.inside(argv)

    def _halt(self) -> None:
        """SIGTERM the master and wait until rsyslogd has written its last line."""
        running = self._master is not None and self._master.poll() is None
        stop_process(self._master)
        self._master = None
        if running and self.syslog.running:
            with contextlib.suppress(TimeoutError):
                poll(lambda: "closing down" in self.log_text(), "Cyrus master's last line")

    def _prepare(self) -> None:
        d = self.dir
        BIN = self.bin  # noqa: N806 - the same name as outside, another place
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
        for user, password in self.users.items():
            subprocess.run(
                self._tool([str(self.saslpasswd2), "-p", "-c", "-f", f"{d}/sasldb2",
                            "-u", "mail", user]),
                input=password.encode(), env=self._env, check=True, capture_output=True,
            )  # fmt: skip
        subprocess.run(["chown", "-R", "nobody:nogroup", str(d / "conf"), str(d / "spool"),
                        str(d / "sasldb2")], check=True)  # fmt: skip


class Cyrus310Server(CyrusServer):
    """Debian 13's Cyrus IMAP 3.10, chrooted in the ``trixie-cyrus`` tree."""

    VERSION = "3.10"

    def __init__(self, work_dir: Path, users: Dict[str, str]) -> None:
        super().__init__(work_dir, users)
        self.tree = trixie.tree("trixie-cyrus")
        self.syslog = PrivateSyslog(self.dir, tree=self.tree)
        self._env = dict(os.environ)
        self.bin, self.saslpasswd2 = Path("/usr/lib/cyrus/bin"), Path("/usr/sbin/saslpasswd2")

    def _require(self) -> None:
        if not (self.tree / "usr/lib/cyrus/bin/master").exists():
            raise RuntimeError(f"no Cyrus in {self.tree}: run .ci/setup as root")

    def _tool(self, argv: List[str]) -> List[str]:
        return trixie.command(self.tree, argv, binds=[self.dir])

    def _inside(self, argv: List[str]) -> List[str]:
        hosts = trixie.write_hosts(self.dir / "hosts")
        return self.syslog.inside(argv, [self.dir], hosts=hosts)
