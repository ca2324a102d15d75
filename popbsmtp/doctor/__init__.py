"""``popbsmtp doctor``: does Postfix really consult the table the daemon writes?

Each check gives OK, WARNING or ERROR with a one-line fix: the map (type
listed by ``postconf -m``, files present, readable by ``mail_owner``,
``postmap -q`` finds a granted client, the service user may write its
directory), where ``check_client_access`` sits in the restriction lists of
every smtpd service (main.cf and master.cf overrides), whether the log shows
logins the profiles recognise, what ``ignore_networks`` resolves to, and
whether the daemon runs (a table that holds clients while it does not is an
error: nobody would expire them).  It only reads; ``--fix-hint`` prints
``postconf`` commands and never runs them.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Set, TextIO, Tuple

from popbsmtp import postfix
from popbsmtp.config import Settings
from popbsmtp.daemon.service import build_matcher
from popbsmtp.doctor.probes import (
    age,
    daemon_running,
    live_grants,
    lock_holder,
    service_user,
    tail_lines,
    unreadable_by,
    unwritable_by,
)
from popbsmtp.errors import PopbsmtpError
from popbsmtp.maps import MapSpec, partial_lookups, writer_class
from popbsmtp.maps._files import SERVICE_TABLE, check_directory
from popbsmtp.maps.rebuild import read_keys
from popbsmtp.parse.addresses import parse_networks
from popbsmtp.postfix import PostfixError
from popbsmtp.profiles import LOGIN, registry, select
from popbsmtp.sources.choice import JOURNAL, SourceChoice, choose_source
from popbsmtp.sources.journal import match_entries, read_journal
from popbsmtp.sources.trust import TrustCheck

OK, WARNING, ERROR = "OK", "WARNING", "ERROR"
LOG_LINES = 5000


@dataclass(frozen=True)
class Finding:
    level: str
    subject: str
    detail: str
    fix: str = ""
    commands: Tuple[str, ...] = ()  # exact postconf commands for --fix-hint


class Doctor:
    def __init__(self, settings: Settings, postfix_dir: Optional[str] = None) -> None:
        self.settings = settings
        self.dir: str = postfix_dir or settings.postfix_config_dir
        self.spec: MapSpec = settings.map
        self.table = str(self.spec)
        self.dns: Optional[str] = None  # a resolver for the blocklist checks: --dns

    def run(self) -> List[Finding]:
        try:
            types = postfix.supported_types(self.dir)
        except PostfixError as exc:
            fix = "install and configure Postfix, or set postfix_config_dir (--postfix-dir)"
            return [Finding(ERROR, "postfix", str(exc), fix)]
        if self.settings.grants_from != "log":  # a socketmap front: no log, no policy here
            from popbsmtp.doctor import front

            found = front.check(self.settings, self.dir, types)
            found += self.check_services()
            found += [self.check_ipv6(), self.check_daemon()]
        else:
            found = self.check_map(types)
            found += self.check_services()
            found += [self.check_log(), self.check_networks(), self.check_ipv6()]
            found.append(self.check_daemon())
        from popbsmtp.doctor import antispam  # it imports Finding from here

        found += antispam.check(self.dir, self.dns)
        return found

    # -- the table -------------------------------------------------------

    def check_map(self, types: Tuple[str, ...]) -> List[Finding]:
        kind, path = self.spec.type, self.spec.path
        if self.spec.served and kind in types:
            from popbsmtp.doctor import socketmap

            return socketmap.check(
                self.spec, self.settings.state_dir, self.settings.map_group, self.dir
            )
        if kind not in types:
            default = _safe(lambda: postfix.parameter("default_database_type", self.dir))
            why = (
                f"{kind}: is not a table type this Postfix reads (postconf -m: {', '.join(types)})"
            )
            fix = f"set map = {default or 'lmdb'}:{path} (or install the postfix-{kind} package)"
            return [Finding(ERROR, "map type", why, fix)]
        if kind == "pgsql":
            from popbsmtp.doctor import pgsql

            checks = [Finding(level, "pgsql", why, fix) for level, why, fix in pgsql.check(path)]
            return [*checks, self._readable([path]), self._lookup()]
        files = self._files()
        missing = [f for f in files if not os.path.isfile(f)]
        if not files or missing:
            why = f"{', '.join(missing) or self.table} is missing; smtpd answers 451 for it"
            missing_map = Finding(ERROR, "map", why, "start popbsmtp: it creates the table")
            return [missing_map, self._writable()]
        return [self._readable(files), self._directory(), self._writable(), self._lookup()]

    def _readable(self, files: List[str]) -> Finding:
        owner = _safe(lambda: postfix.parameter("mail_owner", self.dir)) or "postfix"
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

    def _files(self) -> List[str]:
        try:
            writer = writer_class(self.spec.type, self.settings.map_writer, self.dir)
        except PopbsmtpError:
            return []
        return list(writer(self.spec, "OK").files)

    # -- restriction lists -----------------------------------------------

    def check_services(self) -> List[Finding]:
        try:
            services = postfix.smtpd_services(self.dir)
            relay = postfix.parameter("smtpd_relay_restrictions", self.dir)
            recipient = postfix.parameter("smtpd_recipient_restrictions", self.dir)
        except PostfixError as exc:
            return [Finding(ERROR, "restrictions", str(exc), "fix main.cf/master.cf")]
        if not services:
            return [Finding(WARNING, "smtpd", "master.cf runs no smtpd service", "")]
        found: List[Finding] = []
        plain = [s.name for s in services if not _overrides_restrictions(s)]
        if plain:
            found.append(self._judge("main.cf (" + ", ".join(plain) + ")", relay, recipient, None))
        for service in services:
            if _overrides_restrictions(service):
                mine = service.overrides
                found.append(
                    self._judge(
                        f"master.cf {service.name}",
                        mine.get("smtpd_relay_restrictions", relay),
                        mine.get("smtpd_recipient_restrictions", recipient),
                        service.name,
                    )
                )
        return found

    def _judge(self, where: str, relay: str, recipient: str, service: Optional[str]) -> Finding:
        level, detail = postfix.placement(relay, recipient, self.table)
        if level == OK:
            return Finding(OK, f"smtpd {where}", detail)
        command = postfix.fix_command(relay, self.table, service, self.dir)
        reload = shlex.join(["postfix", *(["-c", self.dir] if self.dir else []), "reload"])
        return Finding(level, f"smtpd {where}", detail, f"{command} && {reload}", (command,))

    # -- the log, networks, the daemon -----------------------------------

    def check_log(self) -> Finding:
        chosen = choose_source(self.settings)
        if chosen.kind == JOURNAL:
            return self.check_journal(chosen)
        path = chosen.path
        try:
            lines = tail_lines(path, LOG_LINES)
        except OSError as exc:
            fix = "set logfile = the log your POP/IMAP server writes"
            return Finding(ERROR, "log", f"cannot read {path}: {exc.strerror}", fix)
        found = _count_logins(self.settings, self.settings.profiles, lines)
        where = f"the last {len(lines)} lines of {path} ({chosen.reason})"
        if found:
            return Finding(OK, "log", f"{found} logins recognised in {where}")
        counts = {name: _count_logins(self.settings, [name], lines) for name in registry()}
        would = [name for name, count in counts.items() if count]
        if would:
            why = f"the configured profiles match no login in {where}; these would: {would}"
            return Finding(WARNING, "log", why, f"set profiles = {', '.join(would)}")
        fix = "log in once by POP/IMAP; check logfile; try popbsmtp test"
        return Finding(WARNING, "log", f"no POP/IMAP logins found in {where}", fix)

    def check_journal(self, chosen: SourceChoice) -> Finding:
        """The source is the journal: logins among its last entries, and refused senders."""
        what = f"{chosen.describe()} ({chosen.reason})"
        profiles = select(self.settings.profiles)
        found = refused = 0
        try:
            entries = list(read_journal(chosen.path, last=LOG_LINES))
        except PopbsmtpError as exc:
            fix = "run as root, or add popbsmtp's user to the group systemd-journal"
            return Finding(ERROR, "log", f"cannot read {what}: {exc}", fix)
        trust = TrustCheck(profiles, self.settings.journal_trust)
        lookup = build_matcher(self.settings)
        for _, _, login, why in match_entries(entries, lookup, trust):
            if login is not None and login.event == LOGIN:
                found += why is None
                refused += why is not None
        where = f"the last {len(entries)} entries of {what}"
        if refused:
            fix = "see the daemon's 'refused journal entry' lines; set journal_trust if genuine"
            why = f"{found} logins recognised, {refused} refused (sender not the server) in {where}"
            return Finding(WARNING, "log", why, fix)
        if found:
            return Finding(OK, "log", f"{found} logins recognised in {where}")
        fix = "log in once by POP/IMAP; try popbsmtp test --journal"
        return Finding(WARNING, "log", f"no POP/IMAP logins found in {where}", fix)

    def check_ipv6(self) -> Finding:
        """How much one IPv6 grant covers in this table type (ipv6_scope)."""
        kind = self.spec.type
        if kind == "pgsql":
            from popbsmtp.doctor import pgsql

            return Finding(*pgsql.check_ipv6(self.spec, self.settings.ipv6_scope))
        if not partial_lookups(self.spec):
            return Finding(OK, "ipv6", f"{kind}: is asked for full addresses only: exact")
        if self.settings.ipv6_scope == "neighbours":
            why = (
                f"ipv6_scope = neighbours: in a {kind}: table a grant of P::S also lets every"
                " address written P::S:... relay (smtpd's partial-key lookups)"
            )
            fix = "map = socketmap:... answers exactly; or ipv6_scope = exact"
            return Finding(WARNING, "ipv6", why, fix)
        why = (
            f"{kind}: tables are also searched by partial keys, so IPv6 logins whose address"
            " is not written out in full (all eight groups) are refused, never entered"
        )
        return Finding(OK, "ipv6", why + "; map = socketmap:... would grant them exactly")

    def check_networks(self) -> Finding:
        spec = self.settings.ignore_networks
        try:
            networks = parse_networks(spec, postconf_dir=self.dir)
        except PopbsmtpError as exc:
            return Finding(ERROR, "ignore_networks", str(exc), "fix ignore_networks")
        return Finding(OK, "ignore_networks", f"{spec} resolves to {networks.describe}")

    def check_daemon(self) -> Finding:
        state = os.path.join(self.settings.state_dir, "state.json")
        written = f"map written {age(self._files())}, state saved {age([state])}"
        if not daemon_running(self.settings.state_dir):
            fix = "systemctl start popbsmtp (or popbsmtp run --daemonize)"
            held = self._held()
            if held:
                why = (
                    f"popbsmtp is not running but {self.table} holds {held} client(s) "
                    "that nobody will expire (a killed daemon leaves them)"
                )
                return Finding(ERROR, "daemon", why, f"{fix}; or empty it: popbsmtp withdraw")
            return Finding(WARNING, "daemon", f"popbsmtp is not running; {written}", fix)
        pid = lock_holder(self.settings.state_dir)
        who = f"pid {pid}, holding {self.settings.state_dir}/lock" if pid else "pid unknown"
        return Finding(OK, "daemon", f"popbsmtp is running ({who}); {written}")

    def _held(self) -> int:
        """How many keys the table holds (0 when absent or unreadable: reported above)."""
        files = self._files()
        if not files or not all(os.path.isfile(f) for f in files):
            return 0
        try:
            return len(read_keys(self.spec, self.dir))
        except PopbsmtpError:
            return 0


def _count_logins(settings: Settings, profiles: List[str], lines: List[bytes]) -> int:
    matcher = build_matcher(settings, profiles)
    block = b"".join(line + b"\n" for line in lines)
    return sum(1 for found in matcher.match_block(block, time.time()) if found.event == LOGIN)


def _overrides_restrictions(service: postfix.SmtpdService) -> bool:
    return bool(
        {"smtpd_relay_restrictions", "smtpd_recipient_restrictions"} & set(service.overrides)
    )


def _safe(read: Callable[[], str]) -> str:
    try:
        return read()
    except PostfixError:
        return ""


def main(
    settings: Settings, hint: bool, out: TextIO, dns: Optional[str] = None, probe: bool = False
) -> int:
    """``popbsmtp doctor``: the report, or with ``hint`` only the fix commands."""
    doctor = Doctor(settings)
    doctor.dns = dns
    findings = doctor.run()
    if probe:
        from popbsmtp.doctor.relayprobe import probe as relay_probe

        findings += relay_probe(settings)
    if hint:
        fix_hint(findings, out, settings.postfix_config_dir)
    else:
        report(findings, out)
    return exit_code(findings)


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


def report(findings: List[Finding], out: TextIO) -> None:
    for item in findings:
        out.write(f"{item.level:<8} {item.subject}: {item.detail}\n")
        if item.fix and item.level != OK:
            out.write(f"{'':<8}   fix: {item.fix}\n")


def fix_hint(findings: List[Finding], out: TextIO, postfix_dir: Optional[str] = None) -> None:
    """The postconf commands that fix the Postfix side, then the reload they need."""
    commands = [c for item in findings for c in item.commands]
    for command in dict.fromkeys(commands):
        out.write(command + "\n")
    if commands:
        other = postfix_dir and os.path.normpath(postfix_dir) != postfix.DEFAULT_CONFIG_DIR
        out.write(
            shlex.join(
                ["postfix", *(["-c", postfix_dir] if other and postfix_dir else []), "reload"]
            )
        )
        out.write("\n")


def exit_code(findings: List[Finding]) -> int:
    return 1 if any(item.level == ERROR for item in findings) else 0
