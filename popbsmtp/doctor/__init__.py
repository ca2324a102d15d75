"""``popbsmtp doctor``: does Postfix really consult the table the daemon writes?

Each check gives OK, WARNING or ERROR with a one-line fix: the map (type
listed by ``postconf -m``, files present, readable by ``mail_owner``,
``postmap -q`` finds a granted client, the service user may write its
directory), where ``check_client_access`` sits in the restriction lists of
every smtpd service (main.cf and master.cf overrides), whether the log shows
logins the profiles recognise, what ``ignore_networks`` resolves to, and
whether the daemon runs (a table that holds clients while it does not is an
error: nobody would expire them).  It only reads; ``--fix-hint`` prints
``postconf`` commands and never runs them.  Here: the restriction lists,
the networks, IPv6 and the daemon; the table's checks are in
:mod:`.table`, the log's in :mod:`.logcheck`, a database's, a socketmap's
and a front's in their own modules, findings and their printing in
:mod:`.findings`.
"""

from __future__ import annotations

import os
import shlex
from typing import List, Optional, TextIO

from popbsmtp import postfix
from popbsmtp.config import Settings
from popbsmtp.doctor import logcheck
from popbsmtp.doctor.findings import ERROR, OK, WARNING, Finding, exit_code, fix_hint, report
from popbsmtp.doctor.probes import age, daemon_running, lock_holder
from popbsmtp.doctor.table import TableChecks, compare_map
from popbsmtp.errors import PopbsmtpError
from popbsmtp.maps import MapSpec, partial_lookups
from popbsmtp.parse.addresses import parse_networks
from popbsmtp.postfix import PostfixError

__all__ = ["ERROR", "OK", "WARNING", "Doctor", "Finding", "compare_map", "exit_code", "main"]


class Doctor:
    """Every check of one configuration, in the order the report gives them."""

    def __init__(self, settings: Settings, postfix_dir: Optional[str] = None) -> None:
        self.settings = settings
        self.dir: str = postfix_dir or settings.postfix_config_dir
        self.spec: MapSpec = settings.map
        self.table = str(self.spec)
        self.tables = TableChecks(settings, self.dir)
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
            found = self.tables.check(types)
            found += self.check_services()
            found += [logcheck.check(self.settings), self.check_networks(), self.check_ipv6()]
            found.append(self.check_daemon())
        from popbsmtp.doctor import antispam

        found += antispam.check(self.dir, self.dns)
        return found

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
        written = f"map written {age(self.tables.files())}, state saved {age([state])}"
        if self.settings.grants_from != "log":  # a front saves nothing and writes no file
            written = f"answering from {self.settings.grants_from}, nothing saved here"
        if not daemon_running(self.settings.state_dir):
            fix = "systemctl start popbsmtp (or popbsmtp run --daemonize)"
            held = self.tables.held()
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


def _overrides_restrictions(service: postfix.SmtpdService) -> bool:
    return bool(
        {"smtpd_relay_restrictions", "smtpd_recipient_restrictions"} & set(service.overrides)
    )


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
