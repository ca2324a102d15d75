"""``socketmap:`` tables: the daemon answers Postfix's lookups itself, exactly.

``map = socketmap:unix:/run/popbsmtp/socketmap:popbsmtp`` (or
``socketmap:inet:127.0.0.1:PORT:NAME``, loopback only).  Postfix asks a
socketmap only for the full client address, never for its prefixes, so an
IPv6 grant covers that one address; and the answer is computed at lookup
time, so a grant ends at its expiry to the millisecond even if the core loop
is busy.  The core loop publishes an immutable :class:`Snapshot` of key →
expiry; the server thread (maps/_socketserver.py) only reads it.  When the
daemon stops, the socket goes away and Postfix's lookup fails (fail closed).
A front fed from a database (grants/mirror.py) also says until when its
snapshot may be trusted (:meth:`Writer.confirm`); past that every lookup
gets TEMP, so smtpd answers 4xx instead of relaying on a withdrawn grant.
"""

from __future__ import annotations

import grp
import ipaddress
import logging
import math
import os
import re
import socket
import stat
import time
from dataclasses import dataclass
from typing import Callable, Collection, Dict, Mapping, NamedTuple, Optional, Set

from popbsmtp.errors import EXIT_CONFIG, ConfigError, MapError
from popbsmtp.maps import MapOptions, MapSpec, MapWriter
from popbsmtp.maps._files import trusted_uids
from popbsmtp.maps._socketserver import SocketmapServer, unlink_socket

TYPES = ("socketmap",)
log = logging.getLogger(__name__)

SOCKET_MODE = 0o660
DEFAULT_GROUP = "postfix"
# Keys changed since the last merge are kept apart, so a publication copies
# only them; merged into the base once they outnumber a quarter of it.
_MERGE_MIN = 1024
_DEFAULTS = MapOptions()


@dataclass(frozen=True)
class Endpoint:
    """Where the server listens: a unix socket path, or a loopback host and port."""

    family: str  # "unix" or "inet"
    path: str = ""
    host: str = ""
    port: int = 0
    name: str = ""


def parse_endpoint(text: str) -> Endpoint:
    """``unix:/PATH:NAME`` or ``inet:HOST:PORT:NAME`` (HOST a loopback address)."""
    unix = re.fullmatch(r"unix:(/[^\s\0:]+):([A-Za-z0-9_.-]+)", text)
    if unix:
        return Endpoint("unix", path=unix.group(1), name=unix.group(2))
    inet = re.fullmatch(r"inet:(\[[0-9a-fA-F:]+\]|[^\s\0:\[\]]+):(\d{1,5}):([A-Za-z0-9_.-]+)", text)
    if not inet:
        raise ConfigError(
            f"socketmap:{text} is not socketmap:unix:/PATH:NAME "
            "or socketmap:inet:127.0.0.1:PORT:NAME"
        )
    host, port = inet.group(1).strip("[]"), int(inet.group(2))
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback or not 0 < port < 65536:
        raise ConfigError(
            f"socketmap:{text}: the server listens on a loopback address and port only "
            "(127.0.0.1 or ::1, port 1-65535): anyone who can connect learns who may relay"
        )
    return Endpoint("inet", host=host, port=port, name=inet.group(3))


class UnsafeSocket(MapError):
    """The socket's place is not private: fix the setup, retrying will not help."""

    exit_code = EXIT_CONFIG


class Snapshot(NamedTuple):
    """Key → expiry (epoch seconds), never changed after publication.

    ``recent`` overrides ``base``; an expiry of 0 there means removed.
    ``stale_at`` (monotonic seconds): from then on no key is answered, only
    TEMP; infinite for the daemon's own grant table, which is never stale.
    """

    base: Mapping[str, float]
    recent: Mapping[str, float]
    stale_at: float = math.inf

    def expiry(self, key: str) -> float:
        found = self.recent.get(key)
        if found is None:
            found = self.base.get(key, 0.0)
        return found

    def merged(self) -> Dict[str, float]:
        both = {**self.base, **self.recent}
        return {k: v for k, v in both.items() if v > 0}


# What the packages' tmpfiles.d file (and the SysV script) make: setgid, so that
# the socket inherits group postfix, which the service user is not in.
MAKE_DIRECTORY = "install -d -m 2750 -o popbsmtp -g postfix"


def check_socket_directory(directory: str) -> None:
    """Refuse a socket directory others could write, or reach, or that we do not trust.

    Whoever can write it can put their own socket in its place and answer OK
    for anyone; whoever can reach the socket learns who may relay.  Its owner
    may be root, the daemon's user or the service user (a root daemon under
    the SysV script uses the directory the packages make for ``popbsmtp``).
    """
    try:
        info = os.stat(directory)
    except OSError as exc:
        raise UnsafeSocket(
            f"socket directory {directory}: {exc.strerror}; create it: {MAKE_DIRECTORY} {directory}"
        ) from None
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeSocket(f"socket directory {directory} is not a directory")
    if info.st_uid not in trusted_uids():
        raise UnsafeSocket(
            f"socket directory {directory} belongs to uid {info.st_uid}, not to the daemon's "
            f"user (uid {os.geteuid()}), popbsmtp or root; fix with: chown popbsmtp {directory}"
        )
    if mode & 0o027:
        raise UnsafeSocket(
            f"socket directory {directory} has mode {mode:04o}: others may reach it or the "
            f"group may write it; fix with: chmod 2750 {directory} (group postfix)"
        )


def _give_group(path: str, gid: int, name: str) -> None:
    """The socket's group: only root or a member may give it; setgid inherits it."""
    try:
        os.chown(path, -1, gid)
    except PermissionError:
        directory = os.path.dirname(path)
        raise UnsafeSocket(
            f"cannot give the socket {path} group {name}: the daemon's user is not in it; "
            f"make {directory} setgid with that group (chmod 2750 {directory}, as "
            f"'{MAKE_DIRECTORY} {directory}' does), or run the daemon in that group"
        ) from None


def _answering(path: str) -> bool:
    """Whether a live server accepts connections on ``path`` (a stale socket refuses)."""
    with socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


class Writer(MapWriter):
    """Publish snapshots of the grants and answer lookups from them."""

    expiring = True
    partial_lookups = False  # Postfix asks a socketmap for the full address only
    writes_files = False  # no table file: the socket's directory is checked in open()

    def __init__(self, spec: MapSpec, value: str, options: MapOptions = _DEFAULTS) -> None:
        super().__init__(spec, value, options)
        self.endpoint = parse_endpoint(spec.path)
        self.clock: Callable[[], float] = time.time  # tests put a fake clock here
        self.monotonic: Callable[[], float] = time.monotonic  # and here (staleness)
        self.snapshot = Snapshot({}, {})
        self._reply_ok = b"OK " + value.encode("utf-8")
        self._reply_stale = b"TEMP popbsmtp: its grant source is not current (see its log)"
        self._server: Optional[SocketmapServer] = None
        self._inode = 0

    @property
    def files(self) -> Collection[str]:
        return (self.endpoint.path,) if self.endpoint.family == "unix" else ()

    # -- lookups (the server's thread) --------------------------------------

    def answer(self, name: str, key: str) -> bytes:
        if name != self.endpoint.name:
            return b"PERM unknown map name"
        # Read the snapshot once: the core loop may publish a new one meanwhile.
        snapshot = self.snapshot
        if self.monotonic() >= snapshot.stale_at:
            return self._reply_stale
        if self.clock() < snapshot.expiry(key.lower()):
            return self._reply_ok
        return b"NOTFOUND "

    # -- the core loop's side ---------------------------------------------------

    def open(self) -> None:
        listener = self._listen()
        self._server = SocketmapServer(listener, self.answer)
        self._server.start()
        where = self.endpoint.path or f"{self.endpoint.host}:{self.endpoint.port}"
        log.info("answering socketmap lookups on %s (map name %s)", where, self.endpoint.name)

    def _listen(self) -> socket.socket:
        point = self.endpoint
        if point.family == "inet":
            family = socket.AF_INET6 if ":" in point.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((point.host, point.port))
            except OSError as exc:
                sock.close()
                raise MapError(f"cannot listen on {point.host}:{point.port}: {exc}") from None
            sock.listen(128)
            return sock
        check_socket_directory(os.path.dirname(point.path))
        gid = self._group()
        if os.path.lexists(point.path):
            if not stat.S_ISSOCK(os.lstat(point.path).st_mode):
                raise UnsafeSocket(
                    f"{point.path} exists and is not a socket; refusing to replace it"
                )
            if _answering(point.path):
                raise MapError(f"another server answers on {point.path}")
            unlink_socket(point.path)  # left by a daemon that died; ours now
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # No umask dance (it is process-wide, other threads run): the private
        # directory keeps others out until the mode and group are set.
        try:
            sock.bind(point.path)
        except OSError as exc:
            sock.close()
            raise MapError(f"cannot create the socket {point.path}: {exc}") from None
        try:
            _give_group(point.path, gid, self.options.group or DEFAULT_GROUP)
            os.chmod(point.path, SOCKET_MODE)
        except (OSError, UnsafeSocket) as exc:
            sock.close()
            unlink_socket(point.path)  # ours, and not one smtpd could use
            if isinstance(exc, UnsafeSocket):
                raise
            raise MapError(f"cannot set up the socket {point.path}: {exc}") from None
        self._inode = os.lstat(point.path).st_ino
        sock.listen(128)
        return sock

    def _group(self) -> int:
        name = self.options.group or DEFAULT_GROUP
        if name.isdigit():
            return int(name)
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            raise UnsafeSocket(f"map_group: unknown group {name!r} for the socket") from None

    def retime(self, expiries: Mapping[str, float]) -> None:
        self._publish(dict(expiries))

    def apply(self, add: Collection[str], remove: Collection[str]) -> None:
        # Added keys got their expiry from retime(); one never heard of grants nothing.
        if remove:
            self._publish(dict.fromkeys((k.lower() for k in remove), 0.0))

    def replace(self, keys: Collection[str]) -> None:
        old = self.snapshot
        wanted = {k.lower() for k in keys}
        kept = {k: v for k, v in old.merged().items() if k in wanted}
        self.snapshot = Snapshot(kept, {}, old.stale_at)

    def keys(self) -> Set[str]:
        return set(self.snapshot.merged())

    def _publish(self, changes: Dict[str, float]) -> None:
        old = self.snapshot
        recent = {**old.recent, **{k.lower(): v for k, v in changes.items()}}
        if len(recent) > _MERGE_MIN + len(old.base) // 4:
            self.snapshot = Snapshot(Snapshot(old.base, recent).merged(), {}, old.stale_at)
        else:
            self.snapshot = Snapshot(old.base, recent, old.stale_at)  # one swap: atomic

    def confirm(self, until: float) -> None:
        """Trust what is held until ``until`` (monotonic seconds), then answer TEMP.

        Only a front fed from a database calls this, after each answer it got
        from it (before :meth:`open` too: ``-inf`` until the first sync).
        Changes are published before the confirmation that covers them, so a
        lookup never sees a fresh deadline on old data.
        """
        old = self.snapshot
        self.snapshot = Snapshot(old.base, old.recent, until)

    def healthy(self) -> bool:
        """False when our socket file vanished or was replaced: the keeper reopens."""
        if self.endpoint.family != "unix" or self._server is None:
            return True
        return self._ours()

    def _ours(self) -> bool:
        """Our socket is still the one at the path (never remove another's)."""
        try:
            info = os.lstat(self.endpoint.path)
        except OSError:
            return False
        return stat.S_ISSOCK(info.st_mode) and info.st_ino == self._inode

    def close(self) -> None:
        """Stop answering and remove the socket: Postfix's lookups now fail."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stop()
        if self.endpoint.family == "unix" and self._ours():
            unlink_socket(self.endpoint.path)
