"""``doctor`` for ``map = socketmap:…``: is the socket private, does the daemon answer?

Checks the socket's directory and mode (only the daemon's user and the
Postfix group may reach it), connects and asks one key itself, then asks
the same through Postfix (``postmap -q``), and says whether the restriction
order keeps local mail flowing while the daemon is down.  Reads only.
"""

from __future__ import annotations

import grp
import os
import socket
import stat
import subprocess
from typing import TYPE_CHECKING, Iterable, List, Optional, Set

from popbsmtp import postfix
from popbsmtp.doctor.probes import live_grants
from popbsmtp.errors import MapError
from popbsmtp.maps import MapSpec
from popbsmtp.maps._files import trusted_uids
from popbsmtp.maps._socketserver import NetstringError, encode, parse
from popbsmtp.maps.socketmap import DEFAULT_GROUP, Endpoint, parse_endpoint
from popbsmtp.postfix import PostfixError

if TYPE_CHECKING:
    from popbsmtp.doctor.findings import Finding

OK, WARNING, ERROR = "OK", "WARNING", "ERROR"
PROBE_TIMEOUT = 5.0


def check(
    spec: MapSpec, state_dir: str, group: str, postfix_dir: str, keys: Optional[List[str]] = None
) -> List[Finding]:
    """``keys``: granted clients to probe (a front's, from the database); else the state's."""
    point = parse_endpoint(spec.path)
    found = [_socket(point, group), _chroot(point, postfix_dir)] if point.family == "unix" else []
    keys = live_grants(state_dir) if keys is None else keys
    key = keys[-1] if keys else "192.0.2.0"
    found += [_direct(point, key), _postmap(spec, key, bool(keys), postfix_dir)]
    found.append(_order(spec, postfix_dir))
    return found


def _finding(level: str, subject: str, detail: str, fix: str = "") -> Finding:
    from popbsmtp.doctor.findings import Finding

    return Finding(level, subject, detail, fix)


def _socket(point: Endpoint, group: str) -> Finding:
    directory = os.path.dirname(point.path)
    want = group or DEFAULT_GROUP
    fix = f"install -d -m 2750 -o popbsmtp -g {want} {directory}; restart popbsmtp"
    try:
        dir_info, info = os.stat(directory), os.lstat(point.path)
    except OSError as exc:
        why = f"{exc.filename}: {exc.strerror}: the daemon is not answering, smtpd answers 451"
        return _finding(ERROR, "socketmap socket", why, fix)
    dir_mode, mode = stat.S_IMODE(dir_info.st_mode), stat.S_IMODE(info.st_mode)
    problems = []
    if dir_mode & 0o027:
        problems.append(f"{directory} has mode {dir_mode:04o} (want 0750 or stricter)")
    if dir_info.st_uid not in trusted_uids() | {info.st_uid}:
        problems.append(
            f"{directory} belongs to uid {dir_info.st_uid}, the socket to {info.st_uid}"
        )
    if not stat.S_ISSOCK(info.st_mode):
        problems.append(f"{point.path} is not a socket")
    elif mode & 0o007 or mode & 0o060 != 0o060:
        problems.append(f"{point.path} has mode {mode:04o} (want 0660)")
    try:
        gid = int(want) if want.isdigit() else grp.getgrnam(want).gr_gid
    except KeyError:
        problems.append(f"group {want} does not exist")
        gid = -1
    if gid >= 0 and gid not in (info.st_gid, dir_info.st_gid):
        problems.append(f"neither {point.path} nor {directory} has group {want}")
    if problems:
        return _finding(ERROR, "socketmap socket", "; ".join(problems), fix)
    return _finding(OK, "socketmap socket", f"{point.path}: mode {mode:04o}, group {want} only")


def ask(point: Endpoint, key: str, timeout: float = PROBE_TIMEOUT) -> str:
    """One socketmap request of our own: the reply, or MapError."""
    try:
        if point.family == "unix":
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(timeout)
            sock.connect(point.path)
        else:
            sock = socket.create_connection((point.host, point.port), timeout)
        with sock:
            sock.sendall(encode(f"{point.name} {key}".encode()))
            buffer = b""
            while True:
                reply, _ = parse(buffer, 100_000)
                if reply is not None:
                    return reply.decode(errors="replace")
                chunk = sock.recv(4096)
                if not chunk:
                    raise MapError("the server closed the connection without a reply")
                buffer += chunk
    except (OSError, NetstringError) as exc:
        raise MapError(str(exc)) from None


def _direct(point: Endpoint, key: str) -> Finding:
    where = point.path or f"{point.host}:{point.port}"
    try:
        reply = ask(point, key)
    except MapError as exc:
        fix = "start popbsmtp (systemctl start popbsmtp)"
        why = f"nobody answers on {where}: {exc}; smtpd answers 451 4.3.5 to relay attempts"
        return _finding(ERROR, "socketmap daemon", why, fix)
    if reply.startswith(("OK", "NOTFOUND")):
        return _finding(OK, "socketmap daemon", f"answers on {where}: {key} -> {reply.strip()}")
    if reply.startswith("TEMP"):
        why = f"answers TEMP on {where} ({reply[5:]}): smtpd defers every relay attempt"
        return _finding(ERROR, "socketmap daemon", why, "see popbsmtp's log: is the database up?")
    return _finding(ERROR, "socketmap daemon", f"odd answer for {key}: {reply!r}", "")


def _postmap(spec: MapSpec, key: str, granted: bool, postfix_dir: str) -> Finding:
    try:
        cmd = [*postfix.tool_command("postmap", postfix_dir), "-q", key, str(spec)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (PostfixError, OSError, subprocess.TimeoutExpired) as exc:
        return _finding(ERROR, "postmap -q", f"cannot run postmap: {exc}", "install Postfix")
    if done.returncode not in (0, 1) or done.stderr.strip():
        why = f"Postfix cannot ask {spec}: {done.stderr.strip() or done.returncode}"
        return _finding(ERROR, "postmap -q", why, "start popbsmtp; check the socket above")
    if not granted:
        why = f"Postfix reaches {spec} ({key}: not found); no client is granted now"
        return _finding(OK, "postmap -q", why)
    if done.returncode != 0:
        why = f"granted client {key} is not found through {spec}"
        return _finding(ERROR, "postmap -q", why, "is popbsmtp running with this map?")
    return _finding(OK, "postmap -q", f"finds granted client {key} through {spec}")


def _chroot(point: Endpoint, postfix_dir: str) -> Finding:
    """A chrooted smtpd connects to the socket's path inside its chroot (the queue
    directory): a socket elsewhere is not there for it, and every lookup fails."""
    try:
        services = postfix.smtpd_services(postfix_dir)
        queue = postfix.parameter("queue_directory", postfix_dir)
    except PostfixError as exc:
        return _finding(WARNING, "socketmap chroot", str(exc))
    inside = os.path.normpath(point.path).startswith(os.path.normpath(queue) + os.sep)
    blind = [s.name for s in services if s.chroot and not inside]
    if not blind:
        return _finding(OK, "socketmap chroot", "no smtpd that asks it runs chrooted")
    why = (
        f"smtpd runs chrooted in {queue} (master.cf {', '.join(blind)}: chroot = y), so it"
        f" looks for {point.path} inside {queue} and every lookup fails (451)"
    )
    fix = (
        "use map = socketmap:inet:127.0.0.1:PORT:popbsmtp, or set the chroot column of"
        f" {', '.join(blind)} to n in master.cf (postfix reload)"
    )
    return _finding(WARNING, "socketmap chroot", why, fix)


def _order(spec: MapSpec, postfix_dir: str) -> Finding:
    """permit_auth_destination before the check: a stopped daemon defers relaying only."""
    try:
        words = postfix.restriction_list(postfix.parameter("smtpd_relay_restrictions", postfix_dir))
    except PostfixError as exc:
        return _finding(WARNING, "socketmap order", str(exc))
    at = postfix.check_index(words, str(spec))
    if at is None:
        return _finding(OK, "socketmap order", "the check is not in smtpd_relay_restrictions")
    if "permit_auth_destination" in words[:at]:
        why = "permit_auth_destination comes first: while popbsmtp is down only relaying waits"
        return _finding(OK, "socketmap order", why)
    why = (
        "check_client_access socketmap comes before permit_auth_destination in "
        "smtpd_relay_restrictions: while popbsmtp is down, mail for local users waits too (451)"
    )
    return _finding(WARNING, "socketmap order", why, "put permit_auth_destination before it")


def served_keys(spec: MapSpec, keys: Iterable[str], postfix_dir: str) -> Set[str]:
    """Which of ``keys`` Postfix finds through the socketmap (it cannot be listed)."""
    wanted = "".join(f"{k}\n" for k in keys)
    try:
        cmd = [*postfix.tool_command("postmap", postfix_dir), "-q", "-", str(spec)]
        done = subprocess.run(cmd, input=wanted, capture_output=True, text=True, timeout=60)
    except (PostfixError, OSError, subprocess.TimeoutExpired) as exc:
        raise MapError(f"cannot ask {spec}: {exc}") from None
    if done.returncode not in (0, 1) or "fatal" in done.stderr:
        raise MapError(f"cannot ask {spec}: {done.stderr.strip()}")
    return {line.split("\t", 1)[0].lower() for line in done.stdout.splitlines() if line}
