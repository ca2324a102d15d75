"""``doctor``'s check of the log: does the source show logins the profiles recognise?

The last lines of the log file, or the last entries of the journal with the
journal trust the daemon applies, through the daemon's own block matcher.
"""

from __future__ import annotations

import time
from typing import List

from popbsmtp.config import Settings
from popbsmtp.daemon.service import build_matcher
from popbsmtp.doctor.findings import ERROR, OK, WARNING, Finding
from popbsmtp.doctor.probes import tail_lines
from popbsmtp.errors import PopbsmtpError
from popbsmtp.profiles import LOGIN, registry, select
from popbsmtp.sources.choice import JOURNAL, SourceChoice, choose_source
from popbsmtp.sources.journal import match_entries, read_journal
from popbsmtp.sources.trust import TrustCheck

LOG_LINES = 5000


def check(settings: Settings) -> Finding:
    """Logins the profiles recognise among the source's last lines or entries."""
    chosen = choose_source(settings)
    if chosen.kind == JOURNAL:
        return _check_journal(settings, chosen)
    path = chosen.path
    try:
        lines = tail_lines(path, LOG_LINES)
    except OSError as exc:
        fix = "set logfile = the log your POP/IMAP server writes"
        return Finding(ERROR, "log", f"cannot read {path}: {exc.strerror}", fix)
    found = _count_logins(settings, settings.profiles, lines)
    where = f"the last {len(lines)} lines of {path} ({chosen.reason})"
    if found:
        return Finding(OK, "log", f"{found} logins recognised in {where}")
    counts = {name: _count_logins(settings, [name], lines) for name in registry()}
    would = [name for name, count in counts.items() if count]
    if would:
        why = f"the configured profiles match no login in {where}; these would: {would}"
        return Finding(WARNING, "log", why, f"set profiles = {', '.join(would)}")
    fix = "log in once by POP/IMAP; check logfile; try popbsmtp test"
    return Finding(WARNING, "log", f"no POP/IMAP logins found in {where}", fix)


def _check_journal(settings: Settings, chosen: SourceChoice) -> Finding:
    """The source is the journal: logins among its last entries, and refused senders."""
    what = f"{chosen.describe()} ({chosen.reason})"
    profiles = select(settings.profiles)
    found = refused = 0
    try:
        entries = list(read_journal(chosen.path, last=LOG_LINES))
    except PopbsmtpError as exc:
        fix = "run as root, or add popbsmtp's user to the group systemd-journal"
        return Finding(ERROR, "log", f"cannot read {what}: {exc}", fix)
    trust = TrustCheck(profiles, settings.journal_trust)
    lookup = build_matcher(settings)
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


def _count_logins(settings: Settings, profiles: List[str], lines: List[bytes]) -> int:
    matcher = build_matcher(settings, profiles)
    block = b"".join(line + b"\n" for line in lines)
    return sum(1 for found in matcher.match_block(block, time.time()) if found.event == LOGIN)
