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
from typing import Dict, Optional

from sandbox import SyslogServer, spawn, stop_process

COURIER_ROOT = Path(os.environ.get("POPBSMTP_COURIER_ROOT", "/var/cache/popbsmtp-ci/courier"))

# Runs inside PrivateSyslog's namespace (/dev is private already, /dev/log is ours).
# $1 work dir, $2 unpacked root, $3 imap port, $4 pop3 port.
_COURIER_SCRIPT = """\
set -eu
W="$1"; R="$2"; IMAP="$3"; POP3="$4"; LOGIN=/usr/lib/courier/courier
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


class CourierServer(SyslogServer):
    """Courier imapd and pop3d on 127.0.0.1 and ::1; ``rfc3339_log``/``traditional_log``."""

    def __init__(self, work_dir: Path, users: Dict[str, str]) -> None:
        super().__init__(work_dir, users)
        self._courier: Optional[subprocess.Popen] = None

    def _require(self) -> None:
        needed = [COURIER_ROOT / "usr/sbin/couriertcpd", COURIER_ROOT / "usr/bin/imapd"]
        if not all(p.exists() for p in needed):
            raise RuntimeError(f"Courier is not unpacked in {COURIER_ROOT}: run .ci/setup as root")

    def _launch(self) -> None:
        script = ["sh", "-c", _COURIER_SCRIPT, "courier", str(self.dir), str(COURIER_ROOT),
                  str(self.imap_port), str(self.pop3_port)]  # fmt: skip
        # Its own session: the shell's background jobs are stopped as one process group.
        self._courier = spawn(self.syslog.inside(script), self.dir / "courier.out",
                              new_session=True)  # fmt: skip

    def _halt(self) -> None:
        stop_process(self._courier, group=True)
        self._courier = None

    def _prepare(self) -> None:
        d = self.dir
        for sub in ("etc-up", "etc-work", "usr-up", "usr-work", "home"):
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
