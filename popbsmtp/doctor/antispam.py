"""The classic guide's other two measures, audited on today's Postfix.

Servers set up from the 2003-era "Postfix antispam measures" guides pair
pop-before-smtp with two more things: rejecting mail for unknown local users
(``local_recipient_maps``) and DNS blocklists through ``reject_maps_rbl`` /
``maps_rbl_domains``.  Postfix has since made the first a default (which old
main.cf files may still switch off) and replaced the second with
``reject_rbl_client``; many lists of that era are gone, and some dead lists
were later made to answer for every address, rejecting all mail.  Every
finding here comes from ``postconf``; DNS is asked only with ``--dns``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from popbsmtp import postfix
from popbsmtp.doctor.dnsprobe import answers_everything
from popbsmtp.doctor.findings import ERROR, OK, WARNING, Finding
from popbsmtp.postfix import PostfixError

RESTRICTIONS = (
    "smtpd_client_restrictions",
    "smtpd_helo_restrictions",
    "smtpd_sender_restrictions",
    "smtpd_relay_restrictions",
    "smtpd_recipient_restrictions",
    "smtpd_data_restrictions",
)
# Restrictions whose next word is a DNS list zone (``zone`` or ``zone=filter``).
ZONE_TAKERS = (
    "reject_rbl_client",
    "reject_rhsbl_client",
    "reject_rhsbl_sender",
    "reject_rhsbl_helo",
    "reject_rhsbl_reverse_client",
    "reject_rhsbl_recipient",
    "permit_dnswl_client",
    "permit_rhswl_client",
)


@dataclass(frozen=True)
class DeadList:
    domain: str  # the zone, or the operator's domain for all its zones
    ended: str
    what: str


# Lists that ended, with when and how (their operators' shutdown notices).
DEAD_LISTS: Tuple[DeadList, ...] = (
    DeadList(
        "ordb.org", "2006-12-18", "ORDB closed; since 2008-03-25 it answers for every address"
    ),
    DeadList("dsbl.org", "2008-05", "DSBL stopped listing; its name servers went dark 2009-03"),
    DeadList("orbs.org", "2001", "ORBS shut down"),
    DeadList("osirusoft.com", "2003-08", "Osirusoft closed and then listed every address"),
    DeadList("mail-abuse.org", "2001-07", "the MAPS lists became subscription-only"),
    DeadList("njabl.org", "2013-03", "NJABL closed"),
    DeadList("ahbl.org", "2015-01-01", "AHBL closed and answers for every address"),
    DeadList("sorbs.net", "2024-06", "SORBS was shut down by its owner"),
)


def check(config_dir: str, dns: Optional[str] = None) -> List[Finding]:
    """``dns``: None (no lookups), ``system`` or ``HOST[:PORT]`` of a resolver."""
    try:
        params = {name: postfix.parameter(name, config_dir) for name in _NAMES}
        lists = {name: params[name] for name in RESTRICTIONS}
        for service in postfix.smtpd_services(config_dir):
            for name in RESTRICTIONS:
                if name in service.overrides:
                    lists[f"{service.name} {name}"] = service.overrides[name]
    except PostfixError as exc:
        return [Finding(ERROR, "antispam", str(exc), "fix main.cf/master.cf")]
    found = unknown_users(params, config_dir)
    found += old_rbl(lists, params, config_dir)
    zones = zones_used(lists, params)
    found += dead_lists(zones)
    if dns is not None:
        found += wildcards(zones, dns)
    return found


_NAMES = RESTRICTIONS + (
    "smtpd_reject_unlisted_recipient",
    "local_recipient_maps",
    "mydestination",
    "luser_relay",
    "unknown_local_recipient_reject_code",
    "maps_rbl_domains",
    "postscreen_dnsbl_sites",
)


def _postconf_e(config_dir: str, setting: str) -> str:
    dir_args = [] if config_dir == postfix.DEFAULT_CONFIG_DIR else ["-c", config_dir]
    return shlex.join(["postconf", *dir_args, "-e", setting])


def unknown_users(params: Dict[str, str], config_dir: str) -> List[Finding]:
    """Mail for a user who does not exist must be refused at RCPT, not bounced later."""
    found: List[Finding] = []
    if params["smtpd_reject_unlisted_recipient"].lower() == "no":
        cmd = _postconf_e(config_dir, "smtpd_reject_unlisted_recipient=yes")
        why = "smtpd_reject_unlisted_recipient = no: mail for unknown users is accepted"
        found.append(Finding(ERROR, "unknown users", why, cmd, (cmd,)))
    if params["mydestination"].strip() and not params["local_recipient_maps"].strip():
        cmd = _postconf_e(config_dir, "local_recipient_maps=proxy:unix:passwd.byname $alias_maps")
        relay = params["luser_relay"].strip()
        why = (
            "local_recipient_maps is empty: mail for any name at "
            f"{params['mydestination'].split(',')[0].strip()} is accepted, then bounced"
            " (backscatter)" + (f" or handed to luser_relay {relay}" if relay else "")
        )
        fix = cmd + " (list your users' table instead if local delivery is not to Unix accounts)"
        found.append(Finding(ERROR, "unknown users", why, fix, (cmd,)))
    if params["unknown_local_recipient_reject_code"].strip() == "450":
        cmd = _postconf_e(config_dir, "unknown_local_recipient_reject_code=550")
        why = "unknown_local_recipient_reject_code = 450: senders retry unknown users for days"
        found.append(Finding(WARNING, "unknown users", why, cmd, (cmd,)))
    if not found:
        found.append(Finding(OK, "unknown users", "mail for unknown local users is refused"))
    return found


def _zone(word: str) -> str:
    return word.split("=", 1)[0].split("*", 1)[0].strip().lower().rstrip(".")


def zones_used(lists: Dict[str, str], params: Dict[str, str]) -> List[str]:
    zones: List[str] = []
    for value in lists.values():
        words = postfix.restriction_list(value)
        for i, word in enumerate(words[:-1]):
            if word.lower() in ZONE_TAKERS:
                zones.append(_zone(words[i + 1]))
        if "reject_maps_rbl" in (w.lower() for w in words):
            zones += [_zone(w) for w in postfix.restriction_list(params["maps_rbl_domains"])]
    zones += [_zone(w) for w in postfix.restriction_list(params["postscreen_dnsbl_sites"])]
    return list(dict.fromkeys(z for z in zones if z))


def old_rbl(lists: Dict[str, str], params: Dict[str, str], config_dir: str) -> List[Finding]:
    """``reject_maps_rbl`` (Postfix 1.x) → ``reject_rbl_client ZONE`` for each zone."""
    domains = [_zone(w) for w in postfix.restriction_list(params["maps_rbl_domains"])]
    found: List[Finding] = []
    used = False
    for where, value in lists.items():
        words = postfix.restriction_list(value)
        if "reject_maps_rbl" not in (w.lower() for w in words):
            continue
        used = True
        live = [d for d in domains if dead_list(d) is None]
        new: List[str] = []
        for word in words:
            if word.lower() == "reject_maps_rbl":
                new += [f"reject_rbl_client {d}" for d in live]
            else:
                new.append(word)
        if " " in where:  # a master.cf override: say so, postconf -P writes it
            service, name = where.split(" ", 1)
            cmd = shlex.join(["postconf", "-P", f"{service}/{name}={', '.join(new)}"])
        else:
            cmd = _postconf_e(config_dir, f"{where}={', '.join(new)}")
        if live:
            why = (
                f"{where} uses reject_maps_rbl (obsolete since Postfix 2.1; it reads"
                f" maps_rbl_domains = {', '.join(domains)})"
            )
            found.append(Finding(WARNING, "blocklists", why, cmd, (cmd,)))
        else:
            why = (
                f"{where} uses reject_maps_rbl, but maps_rbl_domains names no live list"
                f" ({', '.join(domains) or 'empty'}): it blocks nothing"
            )
            found.append(Finding(ERROR, "blocklists", why, cmd, (cmd,)))
    if domains and not used:
        cmd = shlex.join(
            ["postconf", *([] if config_dir == postfix.DEFAULT_CONFIG_DIR else ["-c", config_dir]),
             "-X", "maps_rbl_domains"]
        )  # fmt: skip
        why = "maps_rbl_domains is set but no reject_maps_rbl reads it: a leftover"
        found.append(Finding(WARNING, "blocklists", why, cmd, (cmd,)))
    return found


def dead_list(zone: str) -> Optional[DeadList]:
    for dead in DEAD_LISTS:
        if zone == dead.domain or zone.endswith("." + dead.domain):
            return dead
    return None


def dead_lists(zones: List[str]) -> List[Finding]:
    found: List[Finding] = []
    for zone in zones:
        dead = dead_list(zone)
        if dead is not None:
            why = f"{zone}: {dead.what} ({dead.ended})"
            found.append(Finding(WARNING, "blocklists", why, f"remove {zone} from main.cf"))
    if not zones:
        found.append(Finding(OK, "blocklists", "no DNS blocklist is used"))
    elif not found:
        found.append(Finding(OK, "blocklists", f"none of {', '.join(zones)} is known dead"))
    return found


def wildcards(zones: List[str], server: str) -> List[Finding]:
    """A list must not list 127.0.0.1 (RFC 5782): one that does lists everyone."""
    found: List[Finding] = []
    for zone in zones:
        try:
            everyone = answers_everything(zone, server)
        except OSError as exc:
            found.append(Finding(WARNING, f"dns {zone}", f"no answer: {exc}", ""))
            continue
        if everyone:
            why = f"{zone} lists 127.0.0.1, the never-listed test address: it rejects all mail"
            found.append(Finding(ERROR, f"dns {zone}", why, f"remove {zone} from main.cf now"))
        else:
            found.append(Finding(OK, f"dns {zone}", "does not list the test address 127.0.0.1"))
    return found
