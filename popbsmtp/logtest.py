"""``popbsmtp test``: run the matcher over a log and show what it would do.

Like ``fail2ban-regex``: every recognised login or logout is reported, with
why the daemon would *not* grant it (ignored network, too old, invalid
address) — whatever its age — then a summary per rule, the unparseable
lines, and lines that look like POP/IMAP logins but matched no rule, so an
administrator can see format drift and report it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import IO, Any, Dict, Iterable, Iterator, List, Optional, TextIO, Tuple

from popbsmtp.addresses import IgnoredNetworks
from popbsmtp.grants import refusal
from popbsmtp.matcher import Login, Matcher
from popbsmtp.profiles import LOGIN
from popbsmtp.sessions import SessionTracker
from popbsmtp.sources.journal import Entry, match_entries
from popbsmtp.sources.trust import TrustCheck

# Words POP/IMAP servers use for a successful login; used only to point out
# lines that matched nothing, never to grant.
_LOOKS_LIKE_LOGIN = re.compile(
    rb"(?i)(?<!failed )(?<!bad)\b(?:login|logged in|authenticated|auth ok|user login"
    rb"|authentication passed|log on successful|login success|successful login)\b"
)
_FAILURE = re.compile(
    rb"(?i)fail|bad|invalid|denied|error|aborted|disconnected|connection closed|no auth"
    rb"|unknown user|disallowed|mismatch|not found"
)
MAX_MISSES = 20
DEFAULT_MAX_SESSION = 24 * 3600.0


def iso(stamp: float) -> str:
    return dt.datetime.fromtimestamp(stamp, dt.timezone.utc).isoformat()


def run_test(
    lines: Iterable[bytes],
    matcher: Matcher,
    *,
    now: float,
    grace: float,
    ignored: IgnoredNetworks,
    out: TextIO,
    as_json: bool,
    max_session: float = DEFAULT_MAX_SESSION,
) -> Dict[str, Any]:
    misses: List[int] = []

    def events() -> Iterator[Event]:
        for number, line in enumerate(lines, 1):
            line = line.rstrip(b"\n")
            found = matcher.match(line, now)
            if found is None and len(misses) < MAX_MISSES and _looks_like_login(line):
                misses.append(number)
            if found is not None:
                yield number, found, None

    return _run(events(), matcher, misses, now, grace, ignored, out, as_json, max_session)


def run_journal_test(
    entries: Iterable[Entry],
    matcher: Matcher,
    trust: TrustCheck,
    *,
    now: float,
    grace: float,
    ignored: IgnoredNetworks,
    out: TextIO,
    as_json: bool,
    max_session: float = DEFAULT_MAX_SESSION,
) -> Dict[str, Any]:
    """``popbsmtp test --journal``: the same report for journal entries (numbered in
    journal order), with the entries whose sender is not the server refused."""
    misses: List[int] = []
    refused: List[int] = []

    def events() -> Iterator[Event]:
        for number, entry, login, untrusted in match_entries(entries, matcher, trust):
            if login is None:
                message = entry.envelope.message.encode() if entry.envelope else b""
                if len(misses) < MAX_MISSES and _looks_like_login(message):
                    misses.append(number)
                continue
            if untrusted is not None:
                refused.append(number)
                untrusted = f"untrusted sender: {untrusted} [{entry.sender.describe()}]"
            yield number, login, untrusted

    summary = _run(events(), matcher, misses, now, grace, ignored, out, as_json, max_session,
                   refused)  # fmt: skip
    return summary


# (entry number, event, why the sender may not speak for the profile or None)
Event = Tuple[int, Login, Optional[str]]


def _run(
    events: Iterable[Event],
    matcher: Matcher,
    misses: List[int],
    now: float,
    grace: float,
    ignored: IgnoredNetworks,
    out: TextIO,
    as_json: bool,
    max_session: float,
    refused: Optional[List[int]] = None,
) -> Dict[str, Any]:
    # The same joining of two-line forms and session windows as the daemon.
    sessions = SessionTracker(grace, max_session, matcher.profiles)
    for number, found, untrusted in events:
        if untrusted is not None:
            _report(out, number, found, untrusted, as_json)
            continue  # the daemon neither grants nor ends a session on it
        login = sessions.resolve(found)
        if login is None:
            continue  # a connect line: only its later auth line is an event
        reason = None
        if login.event == LOGIN:
            reason = refusal(login, now, sessions.window(login), ignored)
        _report(out, number, login, reason, as_json)
    stats = matcher.stats
    summary = {
        "lines": stats.lines,
        "candidates": stats.candidates,
        "unparseable": stats.unparseable,
        "overlong": stats.overlong,
        "matched": dict(sorted(stats.matched.items())),
        "profiles_matched": sorted({k.split("/")[0] for k in stats.matched}),
        "profiles_tried": [profile.name for profile in matcher.profiles],
        "unrecognised_login_lines": misses,
        "unjoined_two_line_logins": sessions.stats.unjoined,
    }
    if refused is not None:
        summary["untrusted"] = len(refused)
    if as_json:
        out.write(json.dumps({"summary": summary}) + "\n")
    else:
        _print_summary(out, summary)
    return summary


def _looks_like_login(line: bytes) -> bool:
    return bool(_LOOKS_LIKE_LOGIN.search(line)) and not _FAILURE.search(line)


def _report(out: TextIO, number: int, login: Login, reason: Optional[str], as_json: bool) -> None:
    if as_json:
        record = {
            "line": number,
            "ip": login.ip,
            "raw_ip": login.raw_ip,
            "profile": login.profile,
            "rule": login.rule,
            "event": login.event,
            "session": login.session,
            "time": iso(login.time),
            "ignored": reason,
        }
        out.write(json.dumps(record) + "\n")
        return
    note = f"  (not granted: {reason})" if reason else ""
    ip = login.ip or login.raw_ip or "-"
    out.write(f"{number}: {iso(login.time)} {login.event} {ip} {login.rule_id}{note}\n")


def _print_summary(out: TextIO, summary: Dict[str, Any]) -> None:
    out.write(
        f"\nLines read: {summary['lines']}, candidates: {summary['candidates']}, "
        f"unparseable: {summary['unparseable']}, overlong: {summary['overlong']}\n"
    )
    if summary["matched"]:
        out.write("Matched per rule:\n")
        for rule, count in summary["matched"].items():
            out.write(f"  {rule}: {count}\n")
        out.write(f"Profiles that matched: {', '.join(summary['profiles_matched'])}\n")
    if "untrusted" in summary:
        out.write(f"Refused, sender is not the server (journal fields): {summary['untrusted']}\n")
    else:
        out.write("No POP/IMAP logins found.\n")
    out.write(f"Profiles tried: {', '.join(summary['profiles_tried'])}\n")
    if summary["unrecognised_login_lines"]:
        numbers = ", ".join(map(str, summary["unrecognised_login_lines"]))
        out.write(
            f"Lines that look like logins but matched no rule: {numbers}\n"
            "  (if they are successful logins, please report the format)\n"
        )


def open_input(name: str, stdin: IO[bytes]) -> IO[bytes]:
    return stdin if name == "-" else open(name, "rb")  # noqa: SIM115
