"""systemd readiness notification (``Type=notify``) with the stdlib only.

Sends ``READY=1``, ``RELOADING=1`` and ``STOPPING=1`` datagrams to the
socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace).  Without that variable (SysV, foreground, tests) every call is a
no-op.  A failed send is logged, never raised: readiness reporting must not
stop the daemon.  It does not implement the watchdog or fd-store protocols.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``); True when a manager received it."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.warning("ignoring NOTIFY_SOCKET=%r: not a unix socket path", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify systemd (%s): %s", state.split("\n")[0], exc)
        return False
    return True


def ready() -> bool:
    return notify("READY=1\nSTATUS=following the mail log")


def reloading() -> bool:
    # MONOTONIC_USEC lets Type=notify-reload managers match the reload to this message.
    return notify(
        f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
    )


def stopping() -> bool:
    return notify("STOPPING=1")
