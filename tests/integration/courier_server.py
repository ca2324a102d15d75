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

import os
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import trixie
from sandbox import PrivateSyslog, SyslogServer, spawn, stop_process

COURIER_ROOT = Path(os.environ.get("POPBSMTP_COURIER_ROOT", "/var/cache/popbsmtp-ci/courier"))

# Runs inside PrivateSyslog's namespace (/dev is private already, /dev/log is ours).
# $1 work dir, $2 unpacked root ("" in a tree: Courier is installed there), $3 imap
# port, $4 pop3 port.  Writes to /etc go to an overlay in the work directory.
_COURIER_SCRIPT = """\
set -eu
W="$1"; R="$2"; IMAP="$3"; POP3="$4"; LOGIN=/usr/lib/courier/courier
if [ -n "$R" ]; then
    mount -t overlay popbsmtp-etc \
        -o "lowerdir=$R/etc:/etc,upperdir=$W/etc-up,workdir=$W/etc-work" /etc
    mount -t overlay popbsmtp-usr \
        -o "lowerdir=$R/usr:/usr,upperdir=$W/usr-up,workdir=$W/usr-work" /usr
    mount -t tmpfs -o mode=0755 popbsmtp-run /run
    NOIDENT=-noidentlookup  # 5.2's couriertcpd has no ident lookups, nor this option
else
    NOIDENT=""
    mount -t overlay popbsmtp-etc -o "lowerdir=/etc,upperdir=$W/etc-up,workdir=$W/etc-work" /etc
fi
mkdir -p /run/courier/authdaemon
cp "$W/userdb" /etc/courier/userdb && chmod 600 /etc/courier/userdb
makeuserdb
cp "$W/authdaemonrc" /etc/courier/authdaemonrc
cp "$W/server.pem" /etc/courier/imapd.pem && cp "$W/server.pem" /etc/courier/pop3d.pem
/usr/lib/courier/courier-authlib/authdaemond &
set +u; set -a
. /etc/courier/imapd; . /etc/courier/imapd-ssl; . /etc/courier/pop3d; . /etc/courier/pop3d-ssl
IMAP_ENHANCEDIDLE=0; IMAP_STARTTLS=YES; TLS_CACHEFILE=""; TLS_DHPARAMS=""
set +a; set -u
for address in 127.0.0.1 ::1; do
    courierlogger -name=imapd couriertcpd -address=$address -nodnslookup $NOIDENT \\
        "$IMAP" "$LOGIN/imaplogin" /usr/bin/imapd Maildir &
    courierlogger -name=pop3d couriertcpd -address=$address -nodnslookup $NOIDENT \\
        "$POP3" "$LOGIN/courierpop3login" "$LOGIN/courierpop3d" Maildir &
done
wait
"""


class CourierServer(SyslogServer):
    """Courier imapd and pop3d on 127.0.0.1 and ::1; ``rfc3339_log``/``traditional_log``."""

    VERSION = "5.0"

    def __init__(self, work_dir: Path, users: Dict[str, str]) -> None:
        super().__init__(work_dir, users)
        self._courier: Optional[subprocess.Popen] = None
        self.root: Optional[Path] = COURIER_ROOT  # None: installed where it runs (a tree)

    def _require(self) -> None:
        needed = [COURIER_ROOT / "usr/sbin/couriertcpd", COURIER_ROOT / "usr/bin/imapd"]
        if not all(p.exists() for p in needed):
            raise RuntimeError(f"Courier is not unpacked in {COURIER_ROOT}: run .ci/setup as root")

    def _launch(self) -> None:
        script = ["sh", "-c", _COURIER_SCRIPT, "courier", str(self.dir), str(self.root or ""),
                  str(self.imap_port), str(self.pop3_port)]  # fmt: skip
        # Its own session: the shell's background jobs are stopped as one process group.
        self._courier = spawn(self._inside(script), self.dir / "courier.out",
                              new_session=True)  # fmt: skip

    def _inside(self, argv: List[str]) -> List[str]:
        return self.syslog.inside(argv)

    def _tool(self, name: str) -> List[str]:
        """argv of one of Courier's programs (by its path in the package)."""
        assert self.root is not None
        return [str(self.root / name.lstrip("/"))]

    def _halt(self) -> None:
        stop_process(self._courier, group=True)
        self._courier = None

    def _prepare(self) -> None:
        d = self.dir
        for sub in ("etc-up", "etc-work", "usr-up", "usr-work", "home"):
            (d / sub).mkdir()
        env = dict(os.environ, LD_LIBRARY_PATH=str(COURIER_ROOT / "usr/lib/x86_64-linux-gnu"))
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                        "/CN=localhost", "-keyout", str(d / "key.pem"), "-out",
                        str(d / "cert.pem")], check=True, capture_output=True)  # fmt: skip
        (d / "server.pem").write_bytes((d / "key.pem").read_bytes() + (d / "cert.pem").read_bytes())
        lines = []
        for number, (user, password) in enumerate(self.users.items()):
            home = d / "home" / f"u{number}"
            subprocess.run([*self._tool("/usr/bin/maildirmake.courier"), str(home)],
                           env=env, check=True, capture_output=True)  # fmt: skip
            hashed = subprocess.run(
                [*self._tool("/usr/sbin/userdbpw"), "-md5"], input=password.encode() + b"\n",
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


class Courier52Server(CourierServer):
    """Debian 13's Courier-IMAP 5.2, chrooted in the ``trixie-courier`` tree with the
    tree's rsyslogd, a private ``/etc/hosts`` and a resolver that answers at once."""

    VERSION = "5.2"

    def __init__(self, work_dir: Path, users: Dict[str, str]) -> None:
        super().__init__(work_dir, users)
        self.tree = trixie.tree("trixie-courier")
        self.syslog = PrivateSyslog(self.dir, tree=self.tree)
        self.root = None

    def _require(self) -> None:
        if not (self.tree / "usr/sbin/couriertcpd").exists():
            raise RuntimeError(f"no Courier in {self.tree}: run .ci/setup as root")

    def _inside(self, argv: List[str]) -> List[str]:
        hosts = trixie.write_hosts(self.dir / "hosts")
        return self.syslog.inside(argv, [self.dir], hosts=hosts)

    def _tool(self, name: str) -> List[str]:
        return trixie.command(self.tree, [name], binds=[self.dir])
