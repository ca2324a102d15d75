"""The socketmap wire protocol and a server for it that no client can stall.

Postfix sends each request as one netstring (``LEN:NAME KEY,``) and waits
for one netstring reply, keeping the connection for further requests.  One
selector thread serves every connection with non-blocking sockets, so a
client that sends half a request and stops, or garbage, or a huge length,
costs a buffer of bounded size until its deadline, never another client's
answer.  Answers come from ``answer(name, key)``, which must only read
immutable data: this thread never touches the daemon's state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

log = logging.getLogger(__name__)

# A request is "NAME KEY": a map name and a client address, well under this.
MAX_REQUEST = 1024
# Digits of a netstring length: 4 are enough for MAX_REQUEST; more is hostile.
_MAX_DIGITS = len(str(MAX_REQUEST))
# A client must finish a request it started within this many seconds.
REQUEST_TIMEOUT = 10.0
# An idle connection is closed after this long (Postfix reconnects by itself).
IDLE_TIMEOUT = 120.0
# Connections beyond this are closed at once: a flood cannot exhaust our fds.
MAX_CONNECTIONS = 512
# Replies a client does not read pile up to at most this; then it is dropped.
MAX_UNSENT = 64 * 1024


class NetstringError(ValueError):
    """The peer did not send a netstring within our bounds."""


def encode(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


def parse(buffer: bytes, limit: int = MAX_REQUEST) -> Tuple[Optional[bytes], int]:
    """One netstring from the start of ``buffer``: (payload, bytes used).

    (None, 0) while it is incomplete; :class:`NetstringError` as soon as it
    cannot become a valid netstring of at most ``limit`` bytes.
    """
    colon = buffer.find(b":", 0, _MAX_DIGITS + 1)
    if colon < 0:
        head = buffer[: _MAX_DIGITS + 1]
        if len(head) > _MAX_DIGITS or not head.isdigit() and head:
            raise NetstringError("bad netstring length")
        return None, 0
    digits = buffer[:colon]
    if not digits.isdigit() or (len(digits) > 1 and digits[:1] == b"0"):
        raise NetstringError("bad netstring length")
    size = int(digits)
    if size > limit:
        raise NetstringError(f"netstring of {size} bytes (limit {limit})")
    end = colon + 1 + size
    if len(buffer) <= end:
        return None, 0
    if buffer[end : end + 1] != b",":
        raise NetstringError("netstring without its trailing comma")
    return buffer[colon + 1 : end], end + 1


def reply_for(request: bytes, answer: Callable[[str, str], bytes]) -> bytes:
    """The reply payload for one request payload (``NAME KEY``)."""
    try:
        text = request.decode("ascii")
    except UnicodeDecodeError:
        return b"PERM request is not ASCII"
    name, space, key = text.partition(" ")
    if not space or not name or not key or not text.isprintable():
        return b"PERM malformed request"
    return answer(name, key)


@dataclass
class _Connection:
    sock: socket.socket
    deadline: float
    inbox: bytearray = field(default_factory=bytearray)
    outbox: bytearray = field(default_factory=bytearray)
    in_request: bool = False  # part of a request came: its deadline runs
    writing: bool = False  # registered for EVENT_WRITE (a reply did not fit at once)


class SocketmapServer:
    """Serve ``answer`` on a bound, listening socket from one thread."""

    def __init__(
        self,
        listener: socket.socket,
        answer: Callable[[str, str], bytes],
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.listener = listener
        self.answer = answer
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.served = 0
        self.dropped = 0
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._conns: Dict[int, _Connection] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="socketmap", daemon=True)

    def start(self) -> None:
        self.listener.setblocking(False)
        self._wake_r.setblocking(False)
        self._selector.register(self.listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close every socket; returns once the thread is gone."""
        self._stop = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        for conn in list(self._conns.values()):
            self._close(conn)
        self._selector.close()
        self.listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def _run(self) -> None:
        while not self._stop:
            timeout = self._next_deadline() - time.monotonic()
            for key, events in self._selector.select(max(0.0, min(timeout, 1.0))):
                if key.fileobj is self.listener:
                    self._accept()
                elif key.fileobj is self._wake_r:
                    self._drain_wake()
                else:
                    self._service(key.data, events)
            self._expire(time.monotonic())

    def _next_deadline(self) -> float:
        if not self._conns:
            return time.monotonic() + 1.0
        return min(c.deadline for c in self._conns.values())

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_r.recv(64)

    def _accept(self) -> None:
        for _ in range(64):  # a burst of connections: take them, but let others run too
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of fds, for instance: logged, the loop goes on
                log.warning("socketmap: accept failed: %s", exc)
                return
            if len(self._conns) >= self.max_connections:
                self.dropped += 1
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Connection(sock, time.monotonic() + self.idle_timeout)
            self._conns[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _service(self, conn: _Connection, events: int) -> None:
        try:
            if events & selectors.EVENT_READ:
                data = conn.sock.recv(4096)
                if not data:
                    self._close(conn)
                    return
                conn.inbox += data
                self._answer_all(conn)
            if conn.outbox:
                self._send(conn)
        except NetstringError as exc:
            log.debug("socketmap: dropping a client: %s", exc)
            self._close(conn)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._close(conn)

    def _answer_all(self, conn: _Connection) -> None:
        while True:
            request, used = parse(bytes(conn.inbox))
            if request is None:
                break
            del conn.inbox[:used]
            conn.outbox += encode(reply_for(request, self.answer))
            self.served += 1
        # A request must be finished within request_timeout of its first byte
        # (trickling one byte at a time buys nothing); a quiet connection idles longer.
        if not conn.inbox:
            conn.in_request = False
            conn.deadline = time.monotonic() + self.idle_timeout
        elif not conn.in_request:
            conn.in_request = True
            conn.deadline = time.monotonic() + self.request_timeout
        if len(conn.outbox) > MAX_UNSENT:
            raise NetstringError("client does not read its replies")

    def _send(self, conn: _Connection) -> None:
        try:
            sent = conn.sock.send(conn.outbox)
        except (BlockingIOError, InterruptedError):
            sent = 0  # its buffer is full: wait until it can take more
        del conn.outbox[:sent]
        writing = bool(conn.outbox)
        if writing != conn.writing:  # the usual reply fits at once: no extra syscall
            conn.writing = writing
            wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if writing else 0)
            self._selector.modify(conn.sock, wanted, conn)

    def _expire(self, now: float) -> None:
        late: List[_Connection] = [c for c in self._conns.values() if c.deadline <= now]
        for conn in late:
            self._close(conn)

    def _close(self, conn: _Connection) -> None:
        fileno = conn.sock.fileno()
        if fileno >= 0 and self._conns.pop(fileno, None) is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(conn.sock)
        conn.sock.close()


def unlink_socket(path: str) -> None:
    """Remove our socket file so Postfix's next lookup fails at once."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
