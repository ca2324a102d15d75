"""Probes: read-only questions ``popbsmtp doctor`` asks the host.

Can the user Postfix runs as read a file, is the daemon running, what does
the end of the log hold, which grants does the saved state hold.  Each
answers from the file system and ``/proc`` alone and changes nothing; the
doctor turns the answers into findings.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import json
import os
import pwd
import stat
import struct
import time
from typing import Any, Callable, List, Optional

from popbsmtp.errors import PopbsmtpError
from popbsmtp.grants.state import StateLock


def unreadable_by(path: str, user: str) -> str:
    """Why ``user`` cannot read ``path`` (directories need x), or "" when it can."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return f"no such user {user}"
    if entry.pw_uid == 0:
        return ""
    groups = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    parts = os.path.abspath(path).split("/")
    for depth in range(1, len(parts)):
        name = "/".join(parts[: depth + 1]) or "/"
        info = os.stat(name)
        bit = 4 if depth == len(parts) - 1 else 1
        if stat.S_ISDIR(info.st_mode) and bit == 4:
            return f"{name} is a directory"
        shift = 6 if info.st_uid == entry.pw_uid else 3 if info.st_gid in groups else 0
        if not (info.st_mode >> shift) & bit:
            return f"{name} has mode {stat.S_IMODE(info.st_mode):04o}"
    return ""


SERVICE_USER = "popbsmtp"  # User= in the systemd unit; the packages create it


def service_user() -> str:
    """Whom the daemon runs as: the service user when we are root and it exists, else us.

    Under the packaged unit the daemon runs as ``popbsmtp``; root running the
    doctor most likely asks about that daemon.  Anyone else runs it as himself.
    """
    if os.geteuid() == 0:
        try:
            return pwd.getpwnam(SERVICE_USER).pw_name
        except KeyError:
            pass
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def unwritable_by(directory: str, user: str) -> str:
    """Why ``user`` cannot create files in ``directory``, or "" when it can.

    From the mode bits, owners and groups along the path, and read-only mounts;
    ACLs, SELinux and a unit's ``ReadWritePaths=`` are not seen.
    """
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return f"{directory} is on a read-only file system"
        entry = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
    except KeyError:
        return f"no such user {user}"
    except OSError as exc:
        return f"{directory}: {exc.strerror}"
    if entry.pw_uid == 0:
        return ""
    groups = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if entry.pw_name in g.gr_mem}
    parts = os.path.abspath(directory).split("/")
    for depth in range(1, len(parts)):
        name = "/".join(parts[: depth + 1]) or "/"
        try:
            info = os.stat(name)
        except OSError as exc:
            return f"{name}: {exc.strerror}"
        need = 3 if depth == len(parts) - 1 else 1  # write and search, or search
        shift = 6 if info.st_uid == entry.pw_uid else 3 if info.st_gid in groups else 0
        if (info.st_mode >> shift) & need != need:
            owner = _name(pwd.getpwuid, info.st_uid)
            group = _name(grp.getgrgid, info.st_gid)
            return f"{name} has mode {stat.S_IMODE(info.st_mode):04o}, owner {owner}:{group}"
    return ""


def _name(lookup: Callable[[int], Any], number: int) -> str:
    try:
        return str(lookup(number)[0])
    except KeyError:
        return str(number)


def live_grants(state_dir: str) -> List[str]:
    """Granted client keys from the saved snapshot, oldest expiry first (read-only)."""
    try:
        with open(os.path.join(state_dir, "state.json"), "rb") as handle:
            rows = json.loads(handle.read())["grants"]
        now = time.time()
        return [str(ip) for ip, expires, *_ in sorted(rows, key=lambda r: r[1]) if expires > now]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def daemon_running(state_dir: str) -> bool:
    if not os.path.exists(os.path.join(state_dir, "lock")):
        return False
    lock = StateLock(state_dir)
    try:
        if lock.acquire():
            lock.release()
            return False
    except (OSError, PopbsmtpError):
        return False
    return True


def lock_holder(state_dir: str) -> Optional[int]:
    """The pid of the process holding ``state_dir/lock`` (the daemon), or None.

    Asked of the kernel (``F_GETLK``), so it holds whatever pidfile the
    daemon was started with, or none (systemd runs it without one).
    """
    try:
        fd = os.open(os.path.join(state_dir, "lock"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        query = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        kind, _, _, _, pid = struct.unpack("hhqqi", answer)
    except OSError:
        return None
    finally:
        os.close(fd)
    return None if kind == fcntl.F_UNLCK else pid


def tail_lines(path: str, count: int) -> List[bytes]:
    """The last ``count`` lines of a regular file (OSError for anything else:
    a FIFO would block, /dev/zero never ends)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    with os.fdopen(fd, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - count * 400))
        lines = handle.read().splitlines()
    return lines[-count:]


def age(paths: List[str]) -> str:
    """How long ago the newest of ``paths`` changed ("never" if none exists)."""
    stamps = [os.path.getmtime(p) for p in paths if os.path.exists(p)]
    return f"{max(0, round(time.time() - max(stamps)))} s ago" if stamps else "never"
