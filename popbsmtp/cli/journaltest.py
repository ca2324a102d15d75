"""``popbsmtp test --journal``: run journal entries through the daemon's own decisions.

The journal's counterpart of :mod:`popbsmtp.cli.logtest`: entries are matched
as the daemon's journal source matches them (:func:`match_entries`), an
entry whose sender is not the server (journal trust) is reported as refused
with its journald fields and decides nothing, and every other event goes
through the same :class:`Policy` and :func:`apply` onto a grant table of its
own.  Entries are numbered in journal order.  It writes no map and no state.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, TextIO

from popbsmtp.cli.logtest import (
    _FAILURE,
    _LOOKS_LIKE_LOGIN,
    MAX_MISSES,
    _print_summary,
    _report,
    decide,
    summarize,
)
from popbsmtp.grants import GrantTable
from popbsmtp.parse.matcher import Matcher
from popbsmtp.policy import REFUSE, Decision, Policy
from popbsmtp.sources.journal import Entry, match_entries
from popbsmtp.sources.trust import TrustCheck


def _looks_like_login(message: bytes) -> bool:
    return bool(_LOOKS_LIKE_LOGIN.search(message)) and not _FAILURE.search(message)


def run_journal_test(
    entries: Iterable[Entry],
    matcher: Matcher,
    trust: TrustCheck,
    policy: Policy,
    *,
    now: float,
    out: TextIO,
    as_json: bool,
    max_entries: int = 100_000,
) -> Dict[str, Any]:
    table = GrantTable(max_entries)
    misses: List[int] = []
    decisions = untrusted = 0
    for number, entry, found, refused in match_entries(entries, matcher, trust):
        if found is None:
            message = entry.envelope.message.encode() if entry.envelope else b""
            if len(misses) < MAX_MISSES and _looks_like_login(message):
                misses.append(number)
            continue
        if refused is not None:
            untrusted += 1
            why = f"untrusted sender: {refused} [{entry.sender.describe()}]"
            _report(out, number, Decision(REFUSE, found.ip, 0.0, found, why), as_json)
            continue
        decisions += decide(policy, found, now, table, out, number, as_json)
    table.expire(now)
    summary = {**summarize(matcher, policy, table, decisions, misses), "untrusted": untrusted}
    if as_json:
        out.write(json.dumps({"summary": summary}) + "\n")
    else:
        _print_summary(out, {**summary, "unterminated_last_line": False})
        out.write(f"Refused, sender is not the server (journal fields): {untrusted}\n")
    return summary
