"""Plumbing shared by the real-server harnesses (Dovecot, Cyrus, Courier).

`PrivateSyslog` is a private rsyslogd writing the mail log twice (Debian 12's RFC 3339
file format and the traditional one) and a runner that starts a command in a private
mount namespace whose /dev/log is that rsyslogd's socket.  The helpers pick free
loopback ports, poll with a deadline, read listening sockets from /proc and stop our
own children by PID.  Nothing here touches the host's rsyslog, /dev/log or any process
it did not start; it knows nothing about any mail server and is not a pytest fixture.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple, TypeVar

import trixie

# Readiness and shutdown are polled against these deadlines, never slept for.
START_DEADLINE = 15.0
STOP_DEADLINE = 10.0
POLL_INTERVAL = 0.02
LOOPBACKS = ("127.0.0.1", "::1")

# Runs inside `unshare --mount --propagation private`: a tmpfs hides the host's /dev
# (which may lack /dev/log), gets the few device nodes servers need, and /dev/log
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

H = TypeVar("H", bound="Harness")


def require(program: str, package: str) -> str:
    """Path of program, or a loud error: a missing server must fail tests, not skip them."""
    path = shutil.which(program, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
    if path is None:
        raise RuntimeError(f"{program} not found; install the Debian package(s): {package}")
    return path


def poll(
    ready: Callable[[], bool],
    what: str,
    deadline: float = START_DEADLINE,
    alive: Optional[Callable[[], bool]] = None,
) -> None:
    """Call ready() until it is true; TimeoutError after deadline seconds, RuntimeError
    as soon as alive() says the process being waited for died."""
    end = time.monotonic() + deadline
    while not ready():
        if alive is not None and not alive():
            raise RuntimeError(f"process died while waiting for {what}")
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {deadline}s waiting for {what}")
        time.sleep(POLL_INTERVAL)


def free_ports(count: int) -> List[int]:
    """count distinct TCP ports, each free on both 127.0.0.1 and ::1 (servers listen on both)."""
    ports: List[int] = []
    for _ in range(50 * count):
        with socket.socket(socket.AF_INET6) as v6, socket.socket(socket.AF_INET) as v4:
            v6.bind(("::1", 0))
            port = v6.getsockname()[1]
            try:
                v4.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError("no TCP port free on both 127.0.0.1 and ::1")


def _proc_address(field: str) -> str:
    # /proc prints an address as 32-bit words in host byte order.
    raw = b"".join(
        int(field[i : i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(field), 8)
    )
    return socket.inet_ntop(socket.AF_INET6 if len(raw) == 16 else socket.AF_INET, raw)


def listening() -> Set[Tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state, read from /proc so that
    probing makes no log lines (a test connection would be logged by the server)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.readlines()[1:]:
                fields = row.split()
                if fields[3] == "0A":
                    address, port = fields[1].rsplit(":", 1)
                    found.add((_proc_address(address), int(port, 16)))
    return found


def listening_on_loopbacks(ports: Iterable[int]) -> bool:
    """Is every port listening on both 127.0.0.1 and ::1?"""
    return {(host, port) for port in ports for host in LOOPBACKS} <= listening()


def _process_table() -> List[Tuple[int, int, int, str, str]]:
    """(pid, ppid, pgid, start time, state) of every process, from /proc."""
    table = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    # Fields after the parenthesised command name: state ppid pgrp ... starttime.
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table.append((int(entry), int(fields[1]), int(fields[2]), fields[19], fields[0]))
    return table


def descendants(pid: int) -> List[Tuple[int, str]]:
    """(pid, start time) of every process below pid."""
    children: Dict[int, List[Tuple[int, str]]] = {}
    for child, parent, _, start, _ in _process_table():
        children.setdefault(parent, []).append((child, start))
    found: List[Tuple[int, str]] = []
    todo = [pid]
    while todo:
        for process in children.get(todo.pop(), []):
            found.append(process)
            todo.append(process[0])
    return found


def _group_members(pgid: int) -> List[Tuple[int, str]]:
    return [(pid, start) for pid, _, group, start, _ in _process_table() if group == pgid]


def _same_process_alive(pid: int, start_time: str) -> bool:
    """True while pid still names the process that had start_time (no PID reuse) and
    it is not a zombie (orphans are reaped by init, on init's schedule)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == start_time and fields[0] != "Z"


def stop_process(proc: Optional[subprocess.Popen], *, group: bool = False) -> None:
    """SIGTERM our own child by PID, then wait for it and everything it forked.

    group=True signals the child's whole process group instead: for a shell started in
    its own session whose background jobs ignore the shell's end.  Servers' masters exit
    before their service processes do, so those are waited for too, and SIGKILLed by PID
    if they outlive the deadline.
    """
    if proc is None or (proc.poll() is not None and not group):
        return
    family = descendants(proc.pid) + (_group_members(proc.pid) if group else [])
    send = os.killpg if group else os.kill
    with contextlib.suppress(ProcessLookupError):
        send(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            send(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_DEADLINE)
    alive = lambda: [p for p in family if _same_process_alive(*p)]  # noqa: E731
    with contextlib.suppress(TimeoutError):
        poll(lambda: not alive(), "the server's processes to exit", STOP_DEADLINE)
    for pid, _ in alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def spawn(
    argv: List[str], output: Path, env: Optional[Dict[str, str]] = None, new_session: bool = False
) -> subprocess.Popen:
    """Start argv with stdout and stderr in the file output (for the failure message)."""
    with open(output, "wb") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=new_session,
        )


class Harness:
    """start() on entering a with block, stop() on leaving it, whatever happened inside."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: H) -> H:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class PrivateSyslog:
    """A private rsyslogd under directory, and the namespace runner that feeds it.

    `rfc3339_log` is Debian 12's default RSYSLOG_FileFormat, `traditional_log` the
    pre-bookworm RSYSLOG_TraditionalFileFormat; both get every line of `selector`, and
    all.log gets everything.  The socket lives in socket_dir (default: directory), which
    must be short: a unix socket path has at most 107 bytes.  With tree (a Debian root
    from trixie.py), rsyslogd and the programs run by inside() are that tree's, chrooted.
    """

    def __init__(
        self,
        directory: Path,
        *,
        selector: str = "*.*",
        hostname: Optional[str] = None,
        socket_dir: Optional[Path] = None,
        tree: Optional[Path] = None,
    ) -> None:
        self.dir = directory
        self.tree = tree
        self.selector = selector
        self.hostname = hostname
        self.socket = (socket_dir or directory) / "log.sock"
        self.rfc3339_log = directory / "mail.log"
        self.traditional_log = directory / "mail-traditional.log"
        self._proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        require("unshare", "util-linux")
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "rsyslog.conf"
        conf.write_text(self._conf())
        pid_file = str(self.dir / "rsyslogd.pid")
        if self.tree is None:
            argv = [require("rsyslogd", "rsyslog"), "-n", "-f", str(conf), "-i", pid_file]
        else:
            argv = trixie.command(self.tree, ["/usr/sbin/rsyslogd", "-n", "-f", str(conf),
                                              "-i", pid_file],
                                  binds=self._binds([self.socket.parent]))  # fmt: skip
        self._proc = spawn(argv, self.dir / "rsyslogd.out")
        proc = self._proc
        poll(
            lambda: self.socket.exists() and stat.S_ISSOCK(self.socket.stat().st_mode),
            "rsyslogd's socket",
            alive=lambda: proc.poll() is None,
        )

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self.running and self._proc is not None else None

    def _binds(self, extra: Iterable[Path] = ()) -> List[Path]:
        return list(dict.fromkeys([self.dir, *extra]))

    def inside(self, argv: List[str], binds: Iterable[Path] = (), **options: Any) -> List[str]:
        """argv run in a private mount namespace whose /dev/log is our socket.  In a
        tree, binds (and options, see trixie.command) say what the program sees."""
        if self.tree is not None:
            return trixie.command(self.tree, argv, binds=self._binds(binds),
                                  dev_log=self.socket, **options)  # fmt: skip
        hostdev = self.dir / "hostdev"
        hostdev.mkdir(parents=True, exist_ok=True)
        return ["unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", _NAMESPACE_SCRIPT, "sh", str(hostdev), str(self.socket),
                *argv]  # fmt: skip

    def _conf(self) -> str:
        host = f' localHostname="{self.hostname}"' if self.hostname else ""
        # Debian 12's rsyslog.conf routes mail.* to /var/log/mail.log with the default
        # (high-precision RFC 3339) template; the traditional file is its pre-bookworm look.
        # No rate limit: a test must never lose a line.
        return (
            f'global(workDirectory="{self.dir}"{host})\n'
            'module(load="imuxsock" SysSock.Use="off")\n'
            f'input(type="imuxsock" Socket="{self.socket}" RateLimit.Interval="0")\n'
            f'{self.selector} action(type="omfile" file="{self.rfc3339_log}"'
            ' template="RSYSLOG_FileFormat")\n'
            f'{self.selector} action(type="omfile" file="{self.traditional_log}"'
            ' template="RSYSLOG_TraditionalFileFormat")\n'
            f'*.* action(type="omfile" file="{self.dir / "all.log"}")\n'
        )


class SyslogServer(Harness):
    """Base of a server that logs only through syslog: its own directory, users, an
    IMAP and a POP3 port on both loopbacks, and a PrivateSyslog in the same directory.

    Subclasses say what they need (_require), write their files (_prepare), start the
    server through self.syslog.inside() (_launch) and stop it (_halt).
    """

    def __init__(self, work_dir: Path, users: Dict[str, str]) -> None:
        self.dir = Path(work_dir)
        self.users = users
        self.imap_port, self.pop3_port = free_ports(2)
        self.syslog = PrivateSyslog(self.dir)
        self.rfc3339_log = self.syslog.rfc3339_log
        self.traditional_log = self.syslog.traditional_log

    def _require(self) -> None:
        raise NotImplementedError

    def _prepare(self) -> None:
        raise NotImplementedError

    def _launch(self) -> None:
        raise NotImplementedError

    def _halt(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._require()
        self.dir.chmod(0o755)  # the server's unprivileged processes must reach their files
        try:
            self._prepare()
            self.syslog.start()
            self._launch()
            poll(lambda: listening_on_loopbacks((self.imap_port, self.pop3_port)),
                 f"{type(self).__name__}'s listeners")  # fmt: skip
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self._halt()
        self.syslog.stop()

    def log_text(self) -> str:
        try:
            return self.traditional_log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, predicate: Callable[[str], bool], what: str) -> None:
        poll(lambda: predicate(self.log_text()), what)
