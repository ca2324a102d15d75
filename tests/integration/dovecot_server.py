"""Run a real Dovecot on loopback in a temporary directory, so tests see genuine log lines.

`DovecotServer` writes its own dovecot.conf and starts `dovecot -F`.  In syslog mode it
also starts a private rsyslogd and runs Dovecot in a private mount namespace whose
/dev/log is that rsyslogd's socket, so the lines are written by real rsyslog.  It never
touches the host's Dovecot, rsyslog or /dev/log, and it is not a pytest fixture itself.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from mail_clients import connect_without_login, imap_login, pop3_login  # noqa: F401 - re-exported
from sandbox import (
    START_DEADLINE,
    Harness,
    PrivateSyslog,
    descendants,
    free_ports,
    listening_on_loopbacks,
    poll,
    require,
    spawn,
    stop_process,
)

# Name -> password.  The hostile names try to forge later fields of Dovecot's login
# line; they log in successfully, which is the dangerous case for a log parser.
TEST_USERS: Dict[str, str] = {
    "alice": "alice-pw",
    "bob@example.org": "bob-pw",
    "Carol.Mixed-Case": "carol-pw",  # Dovecot lowercases it (auth_username_format = %Lu)
    "x rip=6.6.6.6": "space-pw",
    "a>, method=PLAIN, rip=6.6.6.6, lip=1.1.1.1, mpid=1, session=<a>": "forge-pw",
    'q"u,o"te': "quote-pw",
    "pct%u%{rip}": "pct-pw",
}
# passwd-file cannot hold a ':', so this forgery of a whole message only ever fails.
FORGED_LOGIN_USER = (
    "Login: user=<evil>, method=PLAIN, rip=6.6.6.6, lip=1.1.1.1, mpid=1, session=<e>"
)
ORDINARY_USERS = ("alice", "bob@example.org", "Carol.Mixed-Case")
HOSTILE_USERS = tuple(name for name in TEST_USERS if name not in ORDINARY_USERS)


def _passwd_file_key(name: str) -> str:
    """The form in which passwd-file finds name.

    auth_username_format = %Lu lowercases the login name, and passwd-file expands its
    lookup key through Dovecot's str_escape (a backslash before \\, " and ').
    """
    return "".join("\\" + c if c in "\\\"'" else c for c in name.lower())


class DovecotServer(Harness):
    """A private Dovecot (POP3 + IMAP on 127.0.0.1 and ::1) under work_dir.

    syslog=True: Dovecot logs with syslog() to a private rsyslogd; `syslog_path` is the
    mail log in Debian 12's default RSYSLOG_FileFormat, or RSYSLOG_TraditionalFileFormat
    with traditional=True (both files are always written).  `log_path` is then None.
    syslog=False: Dovecot writes its own `log_path`; `syslog_path` is None.
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        syslog: bool = True,
        traditional: bool = False,
        users: Optional[Dict[str, str]] = None,
        username_chars: Optional[str] = "",
        auth_verbose: bool = False,
        hostname: Optional[str] = None,
    ) -> None:
        self.dir = Path(work_dir) / "dovecot"
        self.users = dict(TEST_USERS if users is None else users)
        self.syslog = syslog
        self.username_chars = username_chars  # "" allows any, None keeps Dovecot's default
        self.auth_verbose = auth_verbose
        self.pop3_port = 0
        self.imap_port = 0
        self._rsyslog = PrivateSyslog(self.dir / "rsyslog", selector="mail.*", hostname=hostname)
        self.rfc3339_log_path = self._rsyslog.rfc3339_log
        self.traditional_log_path = self._rsyslog.traditional_log
        self.log_path: Optional[Path] = None if syslog else self.dir / "dovecot.log"
        self.syslog_path: Optional[Path] = None
        if syslog:
            self.syslog_path = self.traditional_log_path if traditional else self.rfc3339_log_path
        self._dovecot: Optional[subprocess.Popen] = None
        self._socket_dir = self.dir
        self._private_socket_dir = False

    @property
    def active_log(self) -> Path:
        """The file this instance's Dovecot lines land in."""
        path = self.syslog_path or self.log_path
        assert path is not None
        return path

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        dovecot = require("dovecot", "dovecot-core dovecot-pop3d dovecot-imapd")
        if os.geteuid() != 0:
            raise RuntimeError("DovecotServer needs root (Dovecot master, mount namespace)")
        self.dir.mkdir(parents=True, exist_ok=True)
        # A unix socket path has at most 107 bytes and Dovecot's longest name under
        # base_dir is "run/" + 24; deep pytest temp dirs fall back to a short directory.
        if len(str(self.dir)) + 30 > 107:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="dovecot-"))
            self._private_socket_dir = True
        self._rsyslog.socket = self._socket_dir / "log.sock"
        try:
            if self.syslog:
                self._rsyslog.start()
            self._start_dovecot(dovecot)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        running = self._dovecot is not None and self._dovecot.poll() is None
        stop_process(self._dovecot)
        if running and self._rsyslog.running:
            # The master logs its SIGTERM last; once rsyslog wrote it, nothing is in flight.
            with contextlib.suppress(TimeoutError):
                self.wait_for_log("master: Warning: Killed with signal 15", deadline=2.0)
        self._rsyslog.stop()
        if self._private_socket_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._private_socket_dir = False

    def _start_dovecot(self, dovecot: str) -> None:
        for attempt in range(3):
            self.pop3_port, self.imap_port = free_ports(2)
            command = [dovecot, "-F", "-c", str(self._write_dovecot_files())]
            if self.syslog:
                command = self._rsyslog.inside(command)
            output = self.dir / "dovecot.stderr"
            self._dovecot = spawn(command, output)
            try:
                self._wait_until_ready()
                return
            except RuntimeError:
                text = output.read_text(errors="replace")
                stop_process(self._dovecot)
                if "Address already in use" not in text or attempt == 2:
                    raise RuntimeError(f"dovecot failed to start:\n{text}") from None

    def _wait_until_ready(self) -> None:
        proc = self._dovecot
        assert proc is not None
        poll(
            lambda: listening_on_loopbacks((self.pop3_port, self.imap_port)),
            "dovecot's listeners",
            alive=lambda: proc.poll() is None,
        )
        # Proves the log path end to end (through rsyslog in syslog mode).
        self.wait_for_log("master: ", deadline=START_DEADLINE)

    def _write_dovecot_files(self) -> Path:
        run, mail = self._socket_dir / "run", self.dir / "mail"
        for d in (run, self.dir / "state", mail / "home"):
            d.mkdir(parents=True, exist_ok=True)
        nobody = pwd.getpwnam("nobody")
        lines = []
        for i, (name, password) in enumerate(self.users.items()):
            if ":" in name + password or "\n" in name + password:
                raise ValueError(f"passwd-file cannot hold {name!r}")
            home = mail / "home" / f"u{i}"
            home.mkdir(exist_ok=True)
            os.chown(home, nobody.pw_uid, nobody.pw_gid)
            lines.append(f"{_passwd_file_key(name)}:{{PLAIN}}{password}::::/home/u{i}::\n")
        passwd = self.dir / "passwd"
        passwd.write_text("".join(lines))
        conf = self.dir / "dovecot.conf"
        conf.write_text(self._dovecot_conf(run, mail, passwd, nobody))
        return conf

    def _dovecot_conf(self, run: Path, mail: Path, passwd: Path, nobody: pwd.struct_passwd) -> str:
        chars = (
            "" if self.username_chars is None else f"auth_username_chars = {self.username_chars}\n"
        )
        log = "syslog" if self.syslog else str(self.log_path)
        # The anvil listener is off to disable the per-IP auth penalty (up to 15 s per
        # failed login from one IP); auth_failure_delay = 0 likewise keeps tests fast.
        # auth runs as root because it reads the passwd-file from pytest's 0700 tree.
        # Dovecot refuses mail access as root, so mail processes run as nobody inside
        # mail_chroot: pytest's 0700 temp directories are not traversable by nobody, but
        # the chroot is entered while still root.
        return f"""\
base_dir = {run}
state_dir = {self.dir / "state"}
protocols = pop3 imap
listen = 127.0.0.1, ::1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_verbose = {"yes" if self.auth_verbose else "no"}
{chars}log_path = {log}
mail_uid = {nobody.pw_uid}
mail_gid = {nobody.pw_gid}
mail_chroot = {mail}
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = {passwd}
}}
userdb {{
  driver = passwd-file
  args = {passwd}
}}
service auth {{
  user = root
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""

    def process_ids(self) -> List[int]:
        """PIDs of rsyslogd, the Dovecot master and every process below it."""
        pids = [self._rsyslog.pid] if self._rsyslog.pid is not None else []
        if self._dovecot is not None and self._dovecot.poll() is None:
            pids += [self._dovecot.pid] + [pid for pid, _ in descendants(self._dovecot.pid)]
        return pids

    # -- log access ---------------------------------------------------------------

    def log_offset(self) -> int:
        """Current size of the active log; pass it as `since` to see only newer lines."""
        try:
            return self.active_log.stat().st_size
        except FileNotFoundError:
            return 0

    def read_log(self, since: int = 0) -> List[str]:
        """Complete lines of the active log after byte offset `since`."""
        try:
            with open(self.active_log, "rb") as f:
                f.seek(since)
                data = f.read()
        except FileNotFoundError:
            return []
        # Split on LF only: str.splitlines() would also split on U+2028 or U+0085,
        # which Dovecot passes through inside user names.
        return data.decode("utf-8", errors="surrogateescape").split("\n")[:-1]

    def wait_for_log(self, substring: str, deadline: float = 10.0, since: int = 0) -> str:
        """Poll the active log until a line contains substring; return that line."""
        found: List[str] = []

        def ready() -> bool:
            found.extend(line for line in self.read_log(since) if substring in line)
            return bool(found)

        try:
            poll(ready, f"{substring!r} in {self.active_log}", deadline)
        except TimeoutError as e:
            tail = "\n".join(self.read_log(since)[-20:])
            raise TimeoutError(f"{e}; log tail:\n{tail}") from None
        return found[0]
