"""Run a real Dovecot on loopback in a temporary directory, so tests see genuine log lines.

`DovecotServer` writes its own dovecot.conf and starts `dovecot -F`.  In syslog mode it
also starts a private rsyslogd and runs Dovecot in a private mount namespace whose
/dev/log is that rsyslogd's socket, so the lines are written by real rsyslog.  It never
touches the host's Dovecot, rsyslog or /dev/log, and it is not a pytest fixture itself.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import poplib
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple, Type

Address = Tuple[str, int]
DEFAULT_SOURCE: Address = ("127.0.0.5", 0)

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

# Readiness and shutdown are polled against these deadlines, never slept for.
START_DEADLINE = 15.0
STOP_DEADLINE = 10.0
POLL_INTERVAL = 0.02

# Runs inside `unshare --mount --propagation private`: a tmpfs hides the host's /dev
# (which may lack /dev/log), gets the few device nodes Dovecot needs, and /dev/log
# becomes our rsyslogd's socket.  Nothing here is visible outside the namespace.
_NAMESPACE_SCRIPT = """\
set -eu
hostdev="$1"; logsock="$2"; shift 2
mount --bind /dev "$hostdev"
mount -t tmpfs -o mode=0755,nosuid,size=64k popbsmtp-dev /dev
for node in null zero full random urandom tty; do
    if [ -e "$hostdev/$node" ]; then
        : > "/dev/$node"
        mount --bind "$hostdev/$node" "/dev/$node"
    fi
done
ln -s /proc/self/fd /dev/fd
: > /dev/log
mount --bind "$logsock" /dev/log
umount -l "$hostdev"
exec "$@"
"""


def _require(program: str, package: str) -> str:
    """Path of program, or a loud error: a missing server must fail tests, not skip them."""
    path = shutil.which(program, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
    if path is None:
        raise RuntimeError(f"{program} not found; install the Debian package(s): {package}")
    return path


def _passwd_file_key(name: str) -> str:
    """The form in which passwd-file finds name.

    auth_username_format = %Lu lowercases the login name, and passwd-file expands its
    lookup key through Dovecot's str_escape (a backslash before \\, " and ').
    """
    return "".join("\\" + c if c in "\\\"'" else c for c in name.lower())


def _free_port() -> int:
    """A TCP port that is free on both 127.0.0.1 and ::1 (Dovecot listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET6) as v6, socket.socket(socket.AF_INET) as v4:
            v6.bind(("::1", 0))
            port = v6.getsockname()[1]
            try:
                v4.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no TCP port free on both 127.0.0.1 and ::1")


def _listening_ports() -> Set[int]:
    """Ports in LISTEN state, read from /proc so that probing makes no log lines."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.readlines()[1:]:
                fields = row.split()
                if fields[3] == "0A":
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _poll(
    ready: Callable[[], bool],
    deadline: float,
    what: str,
    alive: Optional[Callable[[], bool]] = None,
) -> None:
    """Call ready() until it is true; TimeoutError after deadline seconds."""
    end = time.monotonic() + deadline
    while not ready():
        if alive is not None and not alive():
            raise RuntimeError(f"process died while waiting for {what}")
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {deadline}s waiting for {what}")
        time.sleep(POLL_INTERVAL)


def _descendants(pid: int) -> List[Tuple[int, str]]:
    """(pid, start time) of every process below pid, from /proc."""
    children: Dict[int, List[Tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    # Fields after the parenthesised command name: state ppid ... starttime.
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append((int(entry), fields[19]))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def _same_process_alive(pid: int, start_time: str) -> bool:
    """True while pid still names the process that had start_time (no PID reuse) and
    it is not a zombie (orphans are reaped by init, on init's schedule)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == start_time and fields[0] != "Z"


def _stop_process(proc: Optional[subprocess.Popen]) -> None:
    """SIGTERM our own child by PID, then wait for it and everything it forked.

    Dovecot's master exits before its service processes do; they follow a moment
    later, so they are waited for (and SIGKILLed by PID if they outlive the deadline).
    """
    if proc is None or proc.poll() is not None:
        return
    family = _descendants(proc.pid)
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_DEADLINE)
    alive = lambda: [p for p in family if _same_process_alive(*p)]  # noqa: E731
    with contextlib.suppress(TimeoutError):
        _poll(lambda: not alive(), STOP_DEADLINE, "dovecot's service processes to exit")
    for pid, _ in alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class DovecotServer:
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
        self.hostname = hostname
        self.pop3_port = 0
        self.imap_port = 0
        self.rfc3339_log_path = self.dir / "rsyslog" / "mail.log"
        self.traditional_log_path = self.dir / "rsyslog" / "mail-traditional.log"
        self.log_path: Optional[Path] = None if syslog else self.dir / "dovecot.log"
        self.syslog_path: Optional[Path] = None
        if syslog:
            self.syslog_path = self.traditional_log_path if traditional else self.rfc3339_log_path
        self._dovecot: Optional[subprocess.Popen] = None
        self._rsyslog: Optional[subprocess.Popen] = None
        self._socket_dir = self.dir
        self._private_socket_dir = False
        self._log_socket = self.dir / "log.sock"

    @property
    def active_log(self) -> Path:
        """The file this instance's Dovecot lines land in."""
        path = self.syslog_path or self.log_path
        assert path is not None
        return path

    # -- lifecycle --------------------------------------------------------------

    def __enter__(self) -> DovecotServer:
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
        dovecot = _require("dovecot", "dovecot-core dovecot-pop3d dovecot-imapd")
        if os.geteuid() != 0:
            raise RuntimeError("DovecotServer needs root (Dovecot master, mount namespace)")
        self.dir.mkdir(parents=True, exist_ok=True)
        # A unix socket path has at most 107 bytes and Dovecot's longest name under
        # base_dir is "run/" + 24; deep pytest temp dirs fall back to a short directory.
        if len(str(self.dir)) + 30 > 107:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="dovecot-"))
            self._private_socket_dir = True
        try:
            if self.syslog:
                self._start_rsyslog(_require("rsyslogd", "rsyslog"))
                _require("unshare", "util-linux")
            self._start_dovecot(dovecot)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        running = self._dovecot is not None and self._dovecot.poll() is None
        _stop_process(self._dovecot)
        if running and self._rsyslog is not None:
            # The master logs its SIGTERM last; once rsyslog wrote it, nothing is in flight.
            with contextlib.suppress(TimeoutError):
                self.wait_for_log("master: Warning: Killed with signal 15", deadline=2.0)
        _stop_process(self._rsyslog)
        if self._private_socket_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._private_socket_dir = False

    def _start_rsyslog(self, rsyslogd: str) -> None:
        rsyslog_dir = self.dir / "rsyslog"
        rsyslog_dir.mkdir(parents=True, exist_ok=True)
        self._log_socket = self._socket_dir / "log.sock"
        conf = rsyslog_dir / "rsyslog.conf"
        conf.write_text(self._rsyslog_conf(rsyslog_dir))
        out = open(rsyslog_dir / "rsyslogd.out", "wb")  # noqa: SIM115 - child owns it
        with out:
            self._rsyslog = subprocess.Popen(
                [rsyslogd, "-n", "-f", str(conf), "-i", str(rsyslog_dir / "rsyslogd.pid")],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _poll(
            lambda: self._log_socket.exists() and stat.S_ISSOCK(self._log_socket.stat().st_mode),
            START_DEADLINE,
            "rsyslogd's socket",
            alive=lambda: self._rsyslog is not None and self._rsyslog.poll() is None,
        )

    def _rsyslog_conf(self, rsyslog_dir: Path) -> str:
        host = f' localHostname="{self.hostname}"' if self.hostname else ""
        # Debian 12's rsyslog.conf routes mail.* to /var/log/mail.log with the default
        # (high-precision RFC 3339) template; the traditional file is its pre-bookworm look.
        return (
            f'global(workDirectory="{rsyslog_dir}"{host})\n'
            'module(load="imuxsock" SysSock.Use="off")\n'
            f'input(type="imuxsock" Socket="{self._log_socket}" RateLimit.Interval="0")\n'
            f'mail.* action(type="omfile" file="{self.rfc3339_log_path}")\n'
            f'mail.* action(type="omfile" file="{self.traditional_log_path}"'
            ' template="RSYSLOG_TraditionalFileFormat")\n'
            f'*.* action(type="omfile" file="{rsyslog_dir / "all.log"}")\n'
        )

    def _start_dovecot(self, dovecot: str) -> None:
        for attempt in range(3):
            self.pop3_port = self.imap_port = _free_port()
            while self.imap_port == self.pop3_port:
                self.imap_port = _free_port()
            conf = self._write_dovecot_files()
            command = [dovecot, "-F", "-c", str(conf)]
            if self.syslog:
                hostdev = self.dir / "hostdev"
                hostdev.mkdir(exist_ok=True)
                command = [
                    "unshare", "--mount", "--propagation", "private", "--",
                    "sh", "-c", _NAMESPACE_SCRIPT, "sh", str(hostdev), str(self._log_socket),
                    *command,
                ]  # fmt: skip
            stderr_path = self.dir / "dovecot.stderr"
            with open(stderr_path, "wb") as err:
                self._dovecot = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT
                )
            try:
                self._wait_until_ready()
                return
            except RuntimeError:
                output = stderr_path.read_text(errors="replace")
                _stop_process(self._dovecot)
                if "Address already in use" not in output or attempt == 2:
                    raise RuntimeError(f"dovecot failed to start:\n{output}") from None

    def _wait_until_ready(self) -> None:
        alive = lambda: self._dovecot is not None and self._dovecot.poll() is None  # noqa: E731
        _poll(
            lambda: {self.pop3_port, self.imap_port} <= _listening_ports(),
            START_DEADLINE,
            "dovecot's listeners",
            alive=alive,
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
        pids = [p.pid for p in (self._rsyslog, self._dovecot) if p and p.poll() is None]
        if self._dovecot is not None and self._dovecot.poll() is None:
            pids += [pid for pid, _ in _descendants(self._dovecot.pid)]
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
            _poll(ready, deadline, f"{substring!r} in {self.active_log}")
        except TimeoutError as e:
            tail = "\n".join(self.read_log(since)[-20:])
            raise TimeoutError(f"{e}; log tail:\n{tail}") from None
        return found[0]


# -- clients ----------------------------------------------------------------------


def _server_host(source: Address) -> str:
    return "::1" if ":" in source[0] else "127.0.0.1"


class _BoundPOP3(poplib.POP3):
    """poplib.POP3 whose socket is bound to a chosen source address."""

    def __init__(self, port: int, source: Address, timeout: float) -> None:
        self._source = source
        super().__init__(_server_host(source), port, timeout)

    def _create_socket(self, timeout: Optional[float]) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, self._source)


class _BoundIMAP4(imaplib.IMAP4):
    """imaplib.IMAP4 (no source_address parameter in 3.11) bound to a source address."""

    def __init__(self, port: int, source: Address, timeout: float) -> None:
        self._source = source
        super().__init__(_server_host(source), port, timeout)

    def _create_socket(self, timeout: Optional[float]) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, self._source)


def _imap_quote(text: str) -> str:
    # imaplib quotes the password but sends the user name raw; a name with a space or
    # a quote would be a protocol error rather than a login attempt.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pop3_login(
    port: int,
    user: str,
    password: str,
    source: Address = DEFAULT_SOURCE,
    *,
    logout: bool = True,
    timeout: float = 10.0,
) -> bool:
    """USER/PASS from source; True on +OK.  logout=False drops the TCP connection
    instead of sending QUIT (Dovecot then logs "Disconnected: Connection closed")."""
    client = _BoundPOP3(port, source, timeout)
    try:
        client.user(user)
        client.pass_(password)
        ok = True
    except poplib.error_proto:
        ok = False
    if logout:
        client.quit()
    else:
        client.close()
    return ok


def imap_login(
    port: int,
    user: str,
    password: str,
    source: Address = DEFAULT_SOURCE,
    *,
    logout: bool = True,
    mechanism: str = "LOGIN",
    timeout: float = 10.0,
) -> bool:
    """Log in from source; True on OK.  logout=False drops the TCP connection instead of
    sending LOGOUT.  mechanism "LOGIN" uses the LOGIN command (ASCII names only, as
    imaplib encodes commands as ASCII); "PLAIN" uses AUTHENTICATE PLAIN, whose base64
    payload can carry any UTF-8, even CR and LF."""
    client = _BoundIMAP4(port, source, timeout)
    try:
        if mechanism == "PLAIN":
            payload = f"\0{user}\0{password}".encode()
            client.authenticate("PLAIN", lambda _challenge: payload)
        else:
            client.login(_imap_quote(user), password)
        ok = True
    except imaplib.IMAP4.error:
        ok = False
    if logout:
        client.logout()
    else:
        client.shutdown()
    return ok


@contextlib.contextmanager
def pop3_session(
    port: int, user: str, password: str, source: Address = DEFAULT_SOURCE, timeout: float = 10.0
) -> Iterator[poplib.POP3]:
    """A logged-in POP3 session kept open for the with block; QUIT on exit."""
    client = _BoundPOP3(port, source, timeout)
    try:
        client.user(user)
        client.pass_(password)
        yield client
        client.quit()
    finally:
        client.close()


@contextlib.contextmanager
def imap_session(
    port: int, user: str, password: str, source: Address = DEFAULT_SOURCE, timeout: float = 10.0
) -> Iterator[imaplib.IMAP4]:
    """A logged-in IMAP session kept open for the with block; LOGOUT on exit."""
    client = _BoundIMAP4(port, source, timeout)
    try:
        client.login(_imap_quote(user), password)
        yield client
        client.logout()
    finally:
        with contextlib.suppress(OSError):
            client.shutdown()


def pop3_login_bytes(
    port: int, user: bytes, password: bytes, source: Address = DEFAULT_SOURCE
) -> bool:
    """USER/PASS/QUIT with raw bytes (invalid UTF-8, say), which poplib cannot send."""
    with socket.create_connection((_server_host(source), port), 10.0, source) as sock:
        replies = sock.makefile("rb")
        replies.readline()
        answers = []
        for command in (b"USER " + user, b"PASS " + password, b"QUIT"):
            sock.sendall(command + b"\r\n")
            answers.append(replies.readline().startswith(b"+OK"))
    return answers[1]


def connect_without_login(port: int, source: Address = DEFAULT_SOURCE) -> None:
    """Connect, read the greeting and hang up ("no auth attempts" lines)."""
    with socket.create_connection((_server_host(source), port), 10.0, source) as sock:
        sock.recv(512)
