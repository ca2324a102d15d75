"""Run a real Dovecot on loopback in a temporary directory, so tests see genuine log lines.

`DovecotServer` writes its own dovecot.conf and starts `dovecot -F`: the machine's
Dovecot 2.3, or with version="2.4" Debian 13's, chrooted in the trixie tree (see
trixie.py).  In syslog mode it also starts a private rsyslogd (the tree's, for 2.4) and
runs Dovecot in a private mount namespace whose /dev/log is that rsyslogd's socket, so
the lines are written by real rsyslog; or, given dev_log, it binds that socket instead
and starts no rsyslogd (a journald, say).  It never touches the host's Dovecot, rsyslog
or /dev/log, and it is not a pytest fixture itself.
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

import trixie
from dovecot_conf import Conf, conf_23, conf_24
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
    version: "2.3" (the machine's Dovecot) or "2.4" (the trixie tree's).
    dev_log: with syslog=True, an existing unix socket that becomes Dovecot's /dev/log
    instead of a private rsyslogd (then there is no log file: `syslog_path` is None).
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
        version: str = "2.3",
        dev_log: Optional[Path] = None,
    ) -> None:
        if version not in ("2.3", "2.4"):
            raise ValueError(f"no Dovecot {version} harness")
        self.version = version
        self.tree = trixie.tree("trixie") if version == "2.4" else None
        self.dev_log = dev_log
        self.dir = Path(work_dir) / "dovecot"
        self.users = dict(TEST_USERS if users is None else users)
        self.syslog = syslog
        self.username_chars = username_chars  # "" allows any, None keeps Dovecot's default
        self.auth_verbose = auth_verbose
        self.pop3_port = 0
        self.imap_port = 0
        self._rsyslog = PrivateSyslog(
            self.dir / "rsyslog", selector="mail.*", hostname=hostname, tree=self.tree
        )
        self.rfc3339_log_path = self._rsyslog.rfc3339_log
        self.traditional_log_path = self._rsyslog.traditional_log
        self.log_path: Optional[Path] = None if syslog else self.dir / "dovecot.log"
        self.syslog_path: Optional[Path] = None
        if syslog and dev_log is None:
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
        if self.tree is None:
            dovecot = require("dovecot", "dovecot-core dovecot-pop3d dovecot-imapd")
        else:
            dovecot = "/usr/sbin/dovecot"
        if os.geteuid() != 0:
            raise RuntimeError("DovecotServer needs root (Dovecot master, mount namespace)")
        self.dir.mkdir(parents=True, exist_ok=True)
        # A unix socket path has at most 107 bytes and Dovecot's longest name under
        # base_dir is "run/" + 24; deep pytest temp dirs fall back to a short directory.
        if len(str(self.dir)) + 30 > 107:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="dovecot-"))
            self._private_socket_dir = True
        self._rsyslog.socket = self.dev_log or self._socket_dir / "log.sock"
        try:
            if self.syslog and self.dev_log is None:
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
            command = self._wrap([dovecot, "-F", "-c", str(self._write_dovecot_files())])
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
        if self.syslog_path is not None or self.log_path is not None:
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
        cert, key = self.dir / "cert.pem", self.dir / "key.pem"
        if not key.exists():
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                            "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                           check=True, capture_output=True)  # fmt: skip
        settings = Conf(
            run=run, state=self.dir / "state", mail=mail, passwd=passwd, uid=nobody.pw_uid,
            gid=nobody.pw_gid, pop3_port=self.pop3_port, imap_port=self.imap_port,
            log="syslog" if self.syslog else str(self.log_path),
            username_chars=self.username_chars, auth_verbose=self.auth_verbose,
            cert=cert, key=key,
        )  # fmt: skip
        conf = self.dir / "dovecot.conf"
        conf.write_text(conf_24(settings) if self.tree is not None else conf_23(settings))
        return conf

    def _wrap(self, argv: List[str]) -> List[str]:
        """argv as run where Dovecot runs: its tree, its /dev/log."""
        if self.tree is not None:
            binds = [self.dir, self._socket_dir]
            if self.syslog and self.dev_log is None:
                return self._rsyslog.inside(argv, binds)
            dev_log = self.dev_log if self.syslog else None
            return trixie.command(self.tree, argv, binds=binds, dev_log=dev_log)
        return self._rsyslog.inside(argv) if self.syslog else argv

    def run_inside(self, argv: List[str]) -> None:
        """Run argv to its end where Dovecot runs (its tree, its /dev/log): `logger`, say."""
        subprocess.run(self._wrap(argv), check=True, capture_output=True, timeout=START_DEADLINE)

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
