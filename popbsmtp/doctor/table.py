"""``doctor``'s checks of the table itself, and ``list --read-map``'s comparison.

The table's type against ``postconf -m``, its files, who may read them, its
directory, whether the service user may replace them, a ``postmap -q`` probe
of a granted client; a served table (socketmap) and a database (pgsql) have
checks of their own.  Only reads.
"""

from __future__ import annotations

import os
import subprocess
from typing import Callable, List, Set, TextIO, Tuple

from popbsmtp import postfix
from popbsmtp.config import Settings
from popbsmtp.doctor.findings import ERROR, OK, WARNING, Finding
from popbsmtp.doctor.probes import (
    daemon_running,
    live_grants,
    service_user,
    unreadable_by,
    unwritable_by,
)
from popbsmtp.errors import PopbsmtpError
from popbsmtp.maps import MapSpec, writer_class
from popbsmtp.maps._files import SERVICE_TABLE, check_directory
from popbsmtp.maps.rebuild import read_keys
from popbsmtp.postfix import PostfixError


class TableChecks:
    """The checks of the configured table, as the Postfix instance in ``postfix_dir`` reads it."""

    def __init__(self, settings: Settings, postfix_dir: str) -> None:
        self.settings = settings
        self.dir = postfix_dir
        self.spec: MapSpec = settings.map
        self.table = str(self.spec)

    def check(self, types: Tuple[str, ...]) -> List[Finding]:
        kind, path = self.spec.type, self.spec.path
        if self.spec.served and kind in types:
            from popbsmtp.doctor import socketmap

            return socketmap.check(
                self.spec, self.settings.state_dir, self.settings.map_group, self.dir
            )
        if kind not in types:
            default = safe(lambda: postfix.parameter("default_database_type", self.dir))
            why = (
                f"{kind}: is not a table type this Postfix reads (postconf -m: {', '.join(types)})"
            )
            fix = f"set map = {default or 'lmdb'}:{path} (or install the postfix-{kind} package)"
            return [Finding(ERROR, "map type", why, fix)]
        if kind == "pgsql":
            from popbsmtp.doctor import pgsql

            checks = [Finding(level, "pgsql", why, fix) for level, why, fix in pgsql.check(path)]
            return [*checks, self._readable([path]), self._lookup()]
        files = self.files()
        missing = [f for f in files if not os.path.isfile(f)]
        if not files or missing:
            why = f"{', '.join(missing) or self.table} is missing; smtpd answers 451 for it"
            missing_map = Finding(ERROR, "map", why, "start popbsmtp: it creates the table")
            return [missing_map, self._writable()]
        return [self._readable(files), self._directory(), self._writable(), self._lookup()]

    def _readable(self, files: List[str]) -> Finding:
        owner = safe(lambda: postfix.parameter("mail_owner", self.dir)) or "postfix"
        for name in files:
            problem = unreadable_by(name, owner)
            if problem:
                why = f"the Postfix user {owner} cannot read {name}: {problem}"
                fix = f"set map_mode = 0644 (or map_group = a group of {owner}), restart popbsmtp"
                return Finding(ERROR, "map", why, fix)
        return Finding(OK, "map", f"{self.table} exists and {owner} (mail_owner) can read it")

    def _directory(self) -> Finding:
        directory = os.path.dirname(self.spec.path)
        try:
            check_directory(directory)
        except PopbsmtpError as exc:
            fix = f"chmod go-w {directory}; chown root (or the daemon's user) {directory}"
            return Finding(ERROR, "map directory", str(exc), fix)
        return Finding(
            OK,
            "map directory",
            f"{directory} is owned by root or the daemon, not writable by others",
        )

    def _writable(self) -> Finding:
        """Can the daemon's user create the table's temporary files and rename them in?"""
        directory = os.path.dirname(self.spec.path)
        user = service_user()
        problem = unwritable_by(directory, user)
        if problem:
            why = f"{user} cannot create files in {directory}: {problem}"
            fix = (
                f"set map = {self.spec.type}:{SERVICE_TABLE} (the packages make that directory "
                f"for the popbsmtp user), or let {user} write {directory}"
            )
            return Finding(ERROR, "service user", why, fix)
        return Finding(OK, "service user", f"{user} can create files in {directory}")

    def _lookup(self) -> Finding:
        if not daemon_running(self.settings.state_dir):
            why = f"popbsmtp is not running, so {self.table} is empty by design; nothing to look up"
            return Finding(WARNING, "postmap -q", why, "start popbsmtp, then rerun")
        grants = live_grants(self.settings.state_dir)
        key = grants[-1] if grants else "192.0.2.0"
        try:
            cmd = [*postfix.tool_command("postmap", self.dir), "-q", key, self.table]
        except PostfixError as exc:
            return Finding(ERROR, "postmap -q", str(exc), "install and configure Postfix")
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Finding(ERROR, "postmap -q", f"cannot run postmap: {exc}", "install postfix")
        if done.returncode not in (0, 1) or done.stderr.strip():
            why = f"cannot read {self.table}: {done.stderr.strip() or done.returncode}"
            return Finding(ERROR, "postmap -q", why, "restart popbsmtp: it rebuilds the table")
        if not grants:
            why = "no client is granted now, nothing to look up"
            return Finding(WARNING, "postmap -q", why, "popbsmtp add 192.0.2.1 --for 2m; rerun")
        if done.returncode != 0:
            why = f"granted client {key} is not in {self.table}"
            fix = "is popbsmtp running with this map? compare: popbsmtp list --read-map"
            return Finding(ERROR, "postmap -q", why, fix)
        return Finding(OK, "postmap -q", f"finds granted client {key} in {self.table}")

    def files(self) -> List[str]:
        try:
            writer = writer_class(self.spec.type, self.settings.map_writer, self.dir)
        except PopbsmtpError:
            return []
        return list(writer(self.spec, "OK").files)

    def held(self) -> int:
        """How many keys the table holds (0 when absent or unreadable: reported above)."""
        files = self.files()
        if not files or not all(os.path.isfile(f) for f in files):
            return 0
        try:
            return len(read_keys(self.spec, self.dir))
        except PopbsmtpError:
            return 0


def safe(read: Callable[[], str]) -> str:
    try:
        return read()
    except PostfixError:
        return ""


def compare_map(settings: Settings, granted: Set[str], out: TextIO) -> int:
    """Print what the table holds next to the grants; 1 when they differ."""
    spec: MapSpec = settings.map
    if spec.served:  # asked one key at a time; it holds nothing but grants
        from popbsmtp.doctor.socketmap import served_keys

        in_map = served_keys(spec, granted, settings.postfix_config_dir)
    elif spec.type == "pgsql":  # postmap -s cannot list a database: ask it
        from popbsmtp.maps.keeper import writer_for

        writer = writer_for(settings)
        try:
            in_map = writer.keys()
        finally:
            writer.close()
    else:
        in_map = read_keys(spec, settings.postfix_config_dir)
    for key in sorted(in_map | granted):
        state = (
            "in map, granted"
            if key in in_map and key in granted
            else "in map, NOT granted"
            if key in in_map
            else "granted, NOT in map"
        )
        out.write(f"{key:<40} {state}\n")
    differ = len(in_map ^ granted)
    out.write(f"{spec}: {len(in_map)} key(s); {len(granted)} grant(s); {differ} differ\n")
    return 1 if differ else 0
