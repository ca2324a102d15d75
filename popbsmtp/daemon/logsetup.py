"""Logging for the daemon and the tools: stderr, syslog or a file of our own.

``log_target = auto`` (the default) means syslog (facility ``mail``, ident
``popbsmtp``) when daemonized and stderr in the foreground; under systemd
(``JOURNAL_STREAM`` set) stderr lines carry no timestamp of their own, since
the journal adds one.  ``FILE`` (an absolute path) is our own log file, which
:func:`reopen` re-opens after rotation (on SIGHUP).  This module does not
rotate files and never logs the mail log's content beyond what callers pass.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
import sys
from typing import Optional, TextIO, Union

from popbsmtp.errors import SetupError, StartupError

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


def _file_handler(path: str) -> logging.Handler:
    try:
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        raise SetupError(f"log_target: cannot open log file {path}: {exc.strerror}") from None
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
            handler.stream = open(  # noqa: SIM115 - owned by the handler
                handler.baseFilename, "a", encoding=handler.encoding
            )
        except OSError as exc:
            sys.stderr.write(f"popbsmtp: cannot reopen {handler.baseFilename}: {exc}\n")
        finally:
            handler.release()
