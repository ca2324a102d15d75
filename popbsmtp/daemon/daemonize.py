"""Detaching for SysV init: python-daemon glue and a locked pidfile.

:func:`daemonize` forks through python-daemon and returns in the daemon; the
original process waits on a pipe until the daemon has taken the pidfile lock
and finished starting (``Detached.ready``), relays any start-up error printed
to the daemon's stderr, and exits 0, or with the exit code the daemon's
start-up failure has in the foreground (78 for a setting or a permission, as
init systems expect; else 1).  So an init script that sees exit 0 can rely
on the pidfile.  The pidfile is held with an ``fcntl`` lock for the
daemon's whole life: a lock that nobody holds means a stale file, which is
replaced.  This module creates no threads and opens nothing but the pidfile
and the pipe; it does not drop privileges (the init script runs as root, see
docs/install.md) and it is not used under systemd (``--foreground``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import sys
import threading
from typing import IO, Optional

from popbsmtp.errors import EXIT_ERROR, EXIT_OK, PopbsmtpError

READY = b"\0ready\n"
# Before the error message, the exit code it means: "\0exit 78\n".
FAILED = re.compile(rb"\0exit ([0-9]{1,3})\n")


class AlreadyRunning(PopbsmtpError):
    """Another daemon holds the pidfile lock."""


class PidFile:
    """A pidfile locked with ``lockf`` while open (a python-daemon ``pidfile``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: Optional[int] = None

    def _open(self) -> int:
        # O_NOFOLLOW: a symlink planted at the pidfile path is refused, not followed.
        return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)

    def _lock(self, fd: int) -> None:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            holder = read_pid(self.path)
            raise AlreadyRunning(f"already running (pid {holder or 'unknown'})") from None

    def check(self) -> None:
        """Fail at once when a live daemon holds the lock (before any fork)."""
        try:
            fd = self._open()
        except OSError as exc:
            raise PopbsmtpError(f"pidfile {self.path}: {exc.strerror}") from None
        try:
            self._lock(fd)
        finally:
            os.close(fd)  # closing drops our probe lock; the daemon takes it again

    def __enter__(self) -> PidFile:
        fd = self._open()
        try:
            self._lock(fd)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is None:
            return
        # Unlink while still holding the lock, so a new daemon never loses its file.
        if read_pid(self.path) == os.getpid():
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        os.close(self.fd)
        self.fd = None


def read_pid(path: str) -> Optional[int]:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            text = handle.read(32).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class Detached:
    """The daemon's end of the start-up pipe."""

    def __init__(self, pipe: IO[bytes], pidfile: PidFile) -> None:
        self.pipe: Optional[IO[bytes]] = pipe
        self.pidfile = pidfile

    def ready(self) -> None:
        """Release the waiting parent; stderr goes to /dev/null from now on."""
        if self.pipe is None:
            return
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        with contextlib.suppress(OSError):
            self.pipe.write(READY)
            self.pipe.close()
        self.pipe = None

    def failed(self, code: int) -> None:
        """Tell the waiting parent the exit code of the start-up failure whose
        message follows on stderr (the parent cannot wait for this process)."""
        if self.pipe is not None:
            with contextlib.suppress(OSError):
                self.pipe.write(b"\0exit %d\n" % code)


def daemonize(pidfile: str) -> Detached:
    """Detach; returns only in the daemon.  The calling process exits 0 or 1."""
    if threading.active_count() > 1:
        # Only the forking thread survives a fork: the daemon would miss the others.
        raise PopbsmtpError("internal error: threads were started before daemonizing")
    lock = PidFile(os.path.abspath(pidfile))
    lock.check()
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        os._exit(_wait_for_daemon(read_fd))
    os.close(read_fd)
    pipe = os.fdopen(write_fd, "wb", buffering=0)
    try:
        _enter_daemon(lock, pipe)
    except PopbsmtpError as exc:
        pipe.write(f"popbsmtp: error: {exc}\n".encode())
        os._exit(EXIT_ERROR)
    return Detached(pipe, lock)


def _enter_daemon(lock: PidFile, pipe: IO[bytes]) -> None:
    import daemon  # python-daemon; imported here so the tools never need it

    context = daemon.DaemonContext(
        detach_process=True,
        pidfile=lock,
        umask=0o022,
        working_directory="/",
        stderr=pipe,  # start-up errors reach the waiting parent, then /dev/null
        files_preserve=[pipe],
        signal_map={},  # cli installs the real handlers right after
    )
    try:
        context.open()
    except daemon.daemon.DaemonError as exc:
        raise PopbsmtpError(str(exc)) from None


def _wait_for_daemon(read_fd: int) -> int:
    """In the original process: relay the daemon's start-up output, return an exit code."""
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()  # EOF when the daemon is ready or has died
    ready = data.endswith(READY)
    message = data[: -len(READY)] if ready else data
    failed = FAILED.search(message)
    code = EXIT_OK if ready else EXIT_ERROR
    if failed is not None and not ready:
        code = int(failed.group(1)) or EXIT_ERROR
        message = message[: failed.start()] + message[failed.end() :]
    if message:
        sys.stderr.write(message.decode("utf-8", "replace"))
    if not ready and not message:
        sys.stderr.write("popbsmtp: error: the daemon exited while starting; see its log\n")
    sys.stderr.flush()
    return code
