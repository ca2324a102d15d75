"""POP3 and IMAP clients that log in to a real server from a chosen loopback source.

The servers log the client address, so each test picks its own 127.0.0.N or ::1 as the
source; the functions report what the client saw (login accepted or not), which is
what the tests compare popbsmtp's verdicts with.  No server is started here.
"""

from __future__ import annotations

import contextlib
import imaplib
import poplib
import socket
import ssl
from typing import Any, ContextManager, Iterator, Optional, Tuple, Union

Address = Tuple[str, int]
DEFAULT_SOURCE: Address = ("127.0.0.5", 0)


def _tls_context() -> ssl.SSLContext:
    """The test servers' certificates are throw-away and self-signed."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _server_host(source: Address) -> str:
    return "::1" if ":" in source[0] else "127.0.0.1"


class _SourceBound:
    """Connect from a chosen source address (imaplib has no source_address in 3.11)."""

    host: str
    port: int

    def __init__(self, port: int, source: Address, timeout: float) -> None:
        self._source = source
        super().__init__(_server_host(source), port, timeout)  # type: ignore[call-arg]

    def _create_socket(self, timeout: Optional[float]) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, self._source)


class _BoundPOP3(_SourceBound, poplib.POP3):
    """poplib.POP3 whose socket is bound to a chosen source address."""

    error = poplib.error_proto

    def log_in(self, user: str, password: str, mechanism: str = "USER") -> None:
        if mechanism == "APOP":
            self.apop(user, password)
            return
        self.user(user)
        self.pass_(password)

    def secure(self) -> None:
        self.stls(_tls_context())

    def log_out(self) -> None:
        self.quit()

    def hang_up(self) -> None:
        self.close()


class _BoundIMAP4(_SourceBound, imaplib.IMAP4):
    """imaplib.IMAP4 whose socket is bound to a chosen source address."""

    error = imaplib.IMAP4.error

    def log_in(self, user: str, password: str, mechanism: str = "LOGIN") -> None:
        if mechanism == "PLAIN":
            payload = f"\0{user}\0{password}".encode()
            self.authenticate("PLAIN", lambda _challenge: payload)
        elif mechanism == "CRAM-MD5":
            self.login_cram_md5(user, password)
        else:
            # imaplib quotes the password but sends the user name raw; a name with a
            # space or a quote would be a protocol error rather than a login attempt.
            self.login('"' + user.replace("\\", "\\\\").replace('"', '\\"') + '"', password)

    def log_out(self) -> None:
        self.logout()

    def secure(self) -> None:
        self.starttls(_tls_context())

    def hang_up(self) -> None:
        with contextlib.suppress(OSError):
            self.shutdown()


_Client = Union[_BoundPOP3, _BoundIMAP4]


def _attempt(
    client: _Client, user: str, password: str, mechanism: str, logout: bool, tls: bool = False
) -> bool:
    """One login attempt (after STARTTLS with tls=True); True if the server accepted
    it.  Ends with a proper logout, or with logout=False by dropping the connection."""
    if tls:
        client.secure()
    try:
        client.log_in(user, password, mechanism)
        ok = True
    except client.error:
        ok = False
    if logout:
        client.log_out()
    else:
        client.hang_up()
    return ok


@contextlib.contextmanager
def _session(client: _Client, user: str, password: str) -> Iterator[Any]:
    try:
        client.log_in(user, password)
        yield client
        client.log_out()
    finally:
        client.hang_up()


def pop3_login(
    port: int,
    user: str,
    password: str,
    source: Address = DEFAULT_SOURCE,
    *,
    logout: bool = True,
    timeout: float = 10.0,
    mechanism: str = "USER",
    tls: bool = False,
) -> bool:
    """USER/PASS (or mechanism "APOP") from source, after STLS with tls=True; True on
    +OK.  logout=False drops the TCP connection instead of sending QUIT (Dovecot then
    logs "Disconnected: Connection closed")."""
    client = _BoundPOP3(port, source, timeout)
    return _attempt(client, user, password, mechanism, logout, tls)


def imap_login(
    port: int,
    user: str,
    password: str,
    source: Address = DEFAULT_SOURCE,
    *,
    mechanism: str = "LOGIN",
    logout: bool = True,
    timeout: float = 10.0,
    tls: bool = False,
) -> bool:
    """Log in from source (after STARTTLS with tls=True); True on OK.  logout=False
    drops the TCP connection instead of sending LOGOUT.  mechanism "LOGIN" uses the
    LOGIN command (ASCII names only, as imaplib encodes commands as ASCII); "PLAIN"
    uses AUTHENTICATE PLAIN, whose base64 payload can carry any UTF-8, even CR and LF;
    "CRAM-MD5" the challenge-response mechanism."""
    client = _BoundIMAP4(port, source, timeout)
    return _attempt(client, user, password, mechanism, logout, tls)


def pop3_session(
    port: int, user: str, password: str, source: Address = DEFAULT_SOURCE, timeout: float = 10.0
) -> ContextManager[poplib.POP3]:
    """A logged-in POP3 session kept open for the with block; QUIT on exit."""
    return _session(_BoundPOP3(port, source, timeout), user, password)


def imap_session(
    port: int, user: str, password: str, source: Address = DEFAULT_SOURCE, timeout: float = 10.0
) -> ContextManager[imaplib.IMAP4]:
    """A logged-in IMAP session kept open for the with block; LOGOUT on exit."""
    return _session(_BoundIMAP4(port, source, timeout), user, password)


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
