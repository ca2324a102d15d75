"""File-safety helpers shared by the table writers (not a table type itself).

Tables are created ``0644`` (configurable) so Postfix's unprivileged
processes can read them, never group/world-writable, and never through a
symlink an attacker could plant in the map directory.  :func:`owner_problem`
is also what the state directory, the control spool and our own log file are
checked with: only root and the daemon's own user may own them.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import tempfile
from typing import TYPE_CHECKING, Any, FrozenSet, List, Optional, Tuple

from popbsmtp.errors import MapError

# The table the packages configure, in a directory they create for the service user.
SERVICE_TABLE = "/etc/postfix/popbsmtp/clients"

if TYPE_CHECKING:
    from popbsmtp.maps import MapOptions


def check_plain_file(path: str) -> None:
    """Refuse a table path that is a symlink or not a regular file."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise MapError(f"{path} is a symbolic link; refusing to write through it")
    if not stat.S_ISREG(info.st_mode):
        raise MapError(f"{path} is not a regular file")
    if info.st_mode & 0o022 and info.st_uid == os.geteuid():
        os.chmod(path, stat.S_IMODE(info.st_mode) & ~0o022)


def _user(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


SERVICE_USER = "popbsmtp"  # the packages' service user (init/popbsmtp.sysusers)


def trusted_uids() -> FrozenSet[int]:
    """Who may own what the daemon trusts: root, our effective user, the service user.

    The service user counts even when we run as root: the packaged daemon
    runs as it, and the admin tools (``add``, ``doctor``) run as root on the
    same files.
    """
    try:
        service: Tuple[int, ...] = (pwd.getpwnam(SERVICE_USER).pw_uid,)
    except KeyError:
        service = ()
    return frozenset((0, os.geteuid(), *service))


def owner_problem(path: str) -> Optional[str]:
    """Why someone besides root and the daemon's user could replace ``path``, or None.

    Mode bits are not enough: the owner of a directory can chmod it, rename
    what is in it and put their own files there, and the owner of a
    directory above it can swap the whole directory.  So ``path`` and every
    directory above it must be owned by a :func:`trusted_uids` user.
    """
    trusted = trusted_uids()
    start = os.path.abspath(path)
    for current in _chain(start) + _chain(os.path.realpath(start)):
        try:
            info = os.lstat(current)
        except OSError as exc:
            return f"cannot check {current}: {exc.strerror}"
        if info.st_uid not in trusted:
            names = ", ".join(_user(uid) for uid in sorted(trusted))
            what = "it" if current == start else f"{current}, above or behind it,"
            return (
                f"{what} is owned by {_user(info.st_uid)}, who could replace what is in it; "
                f"only {names} may own it"
            )
    return None


def _chain(path: str) -> List[str]:
    """``path`` and every directory above it, up to ``/``."""
    found = [path]
    while os.path.dirname(found[-1]) != found[-1]:
        found.append(os.path.dirname(found[-1]))
    return found


def check_directory(directory: str) -> None:
    """Refuse a table directory that others may write or own (or that is not a directory).

    Whoever can write the directory can replace the table with one that
    authorizes any client, so this is checked at start-up, like ``state_dir``.
    A root-owned group (``root``) is trusted, as on stock ``/etc/postfix``.
    """
    try:
        info = os.stat(directory)
    except OSError as exc:
        raise MapError(
            f"table directory {directory}: {exc.strerror}; create it for the daemon "
            f"or set map = lmdb:{SERVICE_TABLE} (a directory the packages create)"
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise MapError(f"table directory {directory} is not a directory")
    problem = owner_problem(directory)
    if problem is not None:
        raise MapError(
            f"table directory {directory}: {problem}; fix with: chown root {directory} "
            "(or the daemon's user), or choose a map path in a directory only root "
            "and the daemon own"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o002 or (mode & 0o020 and info.st_gid != 0):
        raise MapError(
            f"table directory {directory} is writable by others (mode {mode:04o}); "
            f"fix with: chmod go-w {directory}  (or choose a map path in a directory "
            "only root and the daemon can write)"
        )


def check_writable(directory: str) -> None:
    """Refuse to start when we cannot create files in the table's directory.

    Every writer creates the table under a temporary name there and renames
    it in (and re-creates it if it vanishes), so a directory the daemon's user
    cannot write (or that systemd mounted read-only) fails now, clearly, not
    at the first login.  Trying is the only honest test (capabilities, ACLs,
    read-only mounts, SELinux all count).
    """
    try:
        with tempfile.TemporaryFile(prefix=".popbsmtp-check-", dir=directory):
            pass
    except OSError as exc:
        user = _user_name(os.geteuid())
        raise MapError(
            f"user {user} cannot create files in the table directory {directory}: "
            f"{exc.strerror}; set map = lmdb:{SERVICE_TABLE} (the RPM and the .deb "
            f"create that directory for the service user) or let {user} write {directory}"
        ) from None


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def apply_ownership(path: str, options: MapOptions) -> None:
    """chown to the configured owner/group (names or numbers), if any."""
    if not options.owner and not options.group:
        return
    uid = _resolve(options.owner, pwd.getpwnam, "user") if options.owner else -1
    gid = _resolve(options.group, grp.getgrnam, "group") if options.group else -1
    os.chown(path, uid, gid, follow_symlinks=False)


def _resolve(name: str, lookup: Any, what: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        entry = lookup(name)
    except KeyError:
        raise MapError(f"unknown {what} {name!r} for the table") from None
    return entry[2]
