"""Logging for the daemon and the tools: stderr, syslog or a file of our own.

``log_target = auto`` (the default) means syslog (facility ``mail``, ident
``popbsmtp``) when daemonized and stderr in the foreground; under systemd
(``JOURNAL_STREAM`` set) stderr lines carry no timestamp of their own, since
the journal adds one.  ``FILE`` (an absolute path) is our own log file, which
:func:`reopen` re-opens after rotation (on SIGHUP); it is created 0640
whatever the umask, never opened through a symlink, and must be a regular
file owned by root or the daemon's user.  This module does not rotate files
and never logs the mail log's content beyond what callers pass.
"""

from __future__ import annotations

import errno
import io
import logging
import logging.handlers
import os
import socket
import stat
import sys
from typing import Optional, TextIO, Union

from popbsmtp.errors import SetupError, StartupError
from popbsmtp.maps._files import trusted_uids

LOG_FILE_MODE = 0o640

SYSLOG_SOCKET = "/dev/log"
_STAMPED = "%(asctime)s popbsmtp[%(process)d] %(levelname)s: %(message)s"


def setup(
    level: str = "info",
    *,
    target: str = "auto",
    daemon: bool = False,
    stream: Optional[TextIO] = None,
    syslog_address: Union[str, tuple] = SYSLOG_SOCKET,
) -> None:
    """Replace the root handlers with one for ``target``; raise StartupError if unusable."""
    if target == "auto":
        target = "syslog" if daemon else "stderr"
    handler: logging.Handler
    if target == "syslog":
        handler = _syslog_handler(syslog_address)
    elif target == "stderr":
        handler = logging.StreamHandler(stream or sys.stderr)
        stamped = not os.environ.get("JOURNAL_STREAM")
        handler.setFormatter(
            logging.Formatter(_STAMPED if stamped else "%(levelname)s: %(message)s")
        )
    else:
        handler = _file_handler(target)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    set_level(level)
    logging.getLogger("watchdog").setLevel(logging.WARNING)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())


def _syslog_handler(address: Union[str, tuple]) -> logging.Handler:
    try:
        if isinstance(address, str):
            # SysLogHandler ignores a missing socket and drops every message; fail at start.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
                probe.connect(address)
        handler = logging.handlers.SysLogHandler(
            address=address, facility=logging.handlers.SysLogHandler.LOG_MAIL
        )
    except OSError as exc:
        raise StartupError(
            f"cannot log to syslog at {address}: {exc.strerror or exc}; "
            "is rsyslog running?  (or set log_target = stderr or a file)"
        ) from None
    handler.ident = f"popbsmtp[{os.getpid()}]: "
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    return handler


class _OwnLogFile(logging.FileHandler):
    """A FileHandler whose file is opened safely (see the module doc)."""

    def _open(self) -> io.TextIOWrapper:
        return open_log_file(self.baseFilename)


def open_log_file(path: str) -> io.TextIOWrapper:
    """Open our own log for appending; raise OSError with the reason if unsafe.

    O_NOFOLLOW: a symlink planted at the path would make root append to any
    file.  The mode is set explicitly, so a umask of 000 makes no
    world-writable log.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(path, flags, LOG_FILE_MODE)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(0, "not a regular file")
        if info.st_uid not in trusted_uids():
            raise OSError(0, f"owned by uid {info.st_uid}, not root or the daemon's user")
        if stat.S_IMODE(info.st_mode) & 0o022:
            os.fchmod(fd, stat.S_IMODE(info.st_mode) & ~0o022)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "a", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


def _file_handler(path: str) -> logging.Handler:
    try:
        handler = _OwnLogFile(path, encoding="utf-8")
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise SetupError(f"log_target: cannot open log file {path}: {why}") from None
    handler.setFormatter(logging.Formatter(_STAMPED))
    return handler


def reopen() -> None:
    """Re-open our own log file (after logrotate moved it); other targets need nothing."""
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.FileHandler):
            continue
        handler.acquire()
        try:
            if handler.stream is not None:
                handler.stream.close()
                handler.stream = None
            handler.stream = open_log_file(handler.baseFilename)
        except OSError as exc:
            sys.stderr.write(f"popbsmtp: cannot reopen {handler.baseFilename}: {exc}\n")
        finally:
            handler.release()
