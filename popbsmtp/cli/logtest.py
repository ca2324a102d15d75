"""``popbsmtp test``: run a log through the daemon's own pipeline and show its decisions.

Like ``fail2ban-regex``, but the answers are the daemon's: the log is cut
into blocks of complete lines as the tail cuts them, matched by the same
block matcher, and every event goes through the same :class:`Policy` and
:func:`apply` onto a grant table of its own, so a line is reported granted,
held, released or refused (and why) exactly as the daemon would decide it at
``now``.  Then a summary per rule, the unparseable lines, and lines that look
like POP/IMAP logins but matched no rule, so an administrator can see format
drift and report it.  It writes no map and no state.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
from typing import IO, Any, Dict, Iterator, List, Set, TextIO, Tuple

from popbsmtp import config
from popbsmtp.cli.args import load_settings
from popbsmtp.daemon.service import build_matcher
from popbsmtp.errors import EXIT_OK, PopbsmtpError
from popbsmtp.grants import GrantTable
from popbsmtp.parse.addresses import parse_networks
from popbsmtp.parse.matcher import Login, Matcher
from popbsmtp.policy import GRANT, HOLD, REFUSE, RELEASE, Decision, Policy, apply, policy_for
from popbsmtp.sources.choice import JOURNAL, choose_source
from popbsmtp.sources.generation import Generation, TailStats

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
READ_SIZE = 1 << 20


def iso(stamp: float) -> str:
    return dt.datetime.fromtimestamp(stamp, dt.timezone.utc).isoformat()


class _Lines:
    """Blocks of complete lines out of a stream, cut and counted as the tail does."""

    def __init__(self, stream: IO[bytes], max_line_length: int) -> None:
        self.stream = stream
        self.limit = max_line_length
        self.stats = TailStats()
        self.torn = b""  # an unterminated last line: the daemon waits for its newline

    def __iter__(self) -> Iterator[Tuple[int, bytes]]:
        """(lines before the block, block)."""
        generation = Generation(fd=-1, offset=0)
        while True:
            data = self.stream.read(READ_SIZE)
            if not data:
                break
            blocks: List[bytes] = []
            before = self.stats.lines
            generation.take(generation.buf + data, blocks, self.stats, self.limit)
            for block in blocks:
                yield before, block
                before += block.count(b"\n")
        self.torn = b"" if generation.skipping else generation.buf


def run_test(
    stream: IO[bytes],
    matcher: Matcher,
    policy: Policy,
    *,
    now: float,
    out: TextIO,
    as_json: bool,
    max_entries: int = 100_000,
) -> Dict[str, Any]:
    table = GrantTable(max_entries)
    lines = _Lines(stream, matcher.max_line_length)
    misses: List[int] = []
    decisions = 0
    for before, block in lines:
        matched: Set[int] = set()
        counted, number = 0, before + 1  # line numbers counted on from the last event's
        for start, found in matcher.match_block_at(block, now):
            matched.add(start)
            number += block.count(b"\n", counted, start)
            counted = start
            decisions += decide(policy, found, now, table, out, number, as_json)
        if len(misses) < MAX_MISSES:
            misses += _misses(block, before, matched, MAX_MISSES - len(misses))
    table.expire(now)  # as the daemon does after reading a batch
    summary = summarize(matcher, policy, table, decisions, misses)
    summary["lines"] = lines.stats.lines
    summary["overlong"] += lines.stats.overlong
    summary["unterminated_last_line"] = bool(lines.torn)
    if as_json:
        out.write(json.dumps({"summary": summary}) + "\n")
    else:
        _print_summary(out, summary)
    return summary


def decide(
    policy: Policy, found: Login, now: float, table: GrantTable, out: TextIO, number: int,
    as_json: bool,
) -> int:  # fmt: skip
    """One event through the policy onto ``table``, each decision reported; how many."""
    decisions = policy.decide(found, now, table)
    for decision in decisions:
        apply(decision, table)
        _report(out, number, decision, as_json)
    return len(decisions)


def summarize(
    matcher: Matcher, policy: Policy, table: GrantTable, decisions: int, misses: List[int]
) -> Dict[str, Any]:
    """What ``test`` reports after the events, from the file and the journal alike."""
    stats = matcher.stats
    return {
        "lines": stats.lines,
        "candidates": stats.candidates,
        "unparseable": stats.unparseable,
        "suspect": stats.suspect,
        "overlong": stats.overlong,
        "matched": dict(sorted(stats.matched.items())),
        "profiles_matched": sorted({k.split("/")[0] for k in stats.matched}),
        "profiles_tried": [profile.name for profile in matcher.profiles],
        "decisions": decisions,
        "granted_now": len(table),
        "unrecognised_login_lines": misses,
        "unjoined_two_line_logins": policy.sessions.stats.unjoined,
    }


def _misses(block: bytes, before: int, matched: Set[int], room: int) -> List[int]:
    """Numbers of lines that look like a login but no rule matched (at most ``room``)."""
    found: List[int] = []
    pos = 0
    while len(found) < room:
        hit = _LOOKS_LIKE_LOGIN.search(block, pos)
        if hit is None:
            break
        start = block.rfind(b"\n", 0, hit.start()) + 1
        end = block.find(b"\n", hit.end())
        pos = end + 1
        if start not in matched and not _FAILURE.search(block, start, end):
            found.append(before + block.count(b"\n", 0, start) + 1)  # a few, at most
    return found


def _report(out: TextIO, number: int, decision: Decision, as_json: bool) -> None:
    event = decision.event
    until = iso(decision.until) if decision.kind in (GRANT, HOLD, RELEASE) else None
    if as_json:
        record = {
            "line": number,
            "ip": decision.ip,
            "raw_ip": event.raw_ip,
            "profile": event.profile,
            "rule": event.rule,
            "event": event.event,
            "session": event.session,
            "time": iso(event.time),
            "decision": decision.kind,
            "until": until,
            "reason": decision.reason,
            "ignored": decision.reason if decision.kind == REFUSE else None,
        }
        out.write(json.dumps(record) + "\n")
        return
    ip = decision.ip or event.raw_ip or "-"
    if decision.kind == HOLD:
        what = f"held while the session is open, at most until {until}"
    elif decision.kind == GRANT:
        what = f"granted until {until}"
    elif decision.kind == RELEASE:
        what = f"session ended, may relay until {until}"
    else:
        what = f"not granted: {decision.reason}"
    out.write(f"{number}: {iso(event.time)} {event.event} {ip} {event.rule_id}: {what}\n")


def _print_summary(out: TextIO, summary: Dict[str, Any]) -> None:
    out.write(
        f"\nLines read: {summary['lines']}, candidates: {summary['candidates']}, "
        f"unparseable: {summary['unparseable']}, overlong: {summary['overlong']}\n"
    )
    if summary["suspect"]:
        out.write(
            f"Login lines refused as suspect (a form the server's version never writes): "
            f"{summary['suspect']}\n"
        )
    if summary["matched"]:
        out.write("Matched per rule:\n")
        for rule, count in summary["matched"].items():
            out.write(f"  {rule}: {count}\n")
        out.write(f"Profiles that matched: {', '.join(summary['profiles_matched'])}\n")
    else:
        out.write("No POP/IMAP logins found.\n")
    out.write(f"Profiles tried: {', '.join(summary['profiles_tried'])}\n")
    out.write(f"Clients the daemon would let relay now: {summary['granted_now']}\n")
    if summary["unrecognised_login_lines"]:
        numbers = ", ".join(map(str, summary["unrecognised_login_lines"]))
        out.write(
            f"Lines that look like logins but matched no rule: {numbers}\n"
            "  (if they are successful logins, please report the format)\n"
        )
    if summary["unterminated_last_line"]:
        out.write("The last line has no newline yet: the daemon waits for it, so it is not read.\n")


def open_input(name: str, stdin: IO[bytes]) -> IO[bytes]:
    return stdin if name == "-" else open(name, "rb")  # noqa: SIM115


# -- the command -------------------------------------------------------------


def cmd_test(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    matcher = build_matcher(settings, args.profile)
    ignored = parse_networks(settings.ignore_networks, postconf_dir=settings.postfix_config_dir)
    policy = policy_for(settings, ignored, matcher.profiles)
    now = time.time() if args.now is None else _parse_now(args.now)
    if args.journal is not None and args.file:
        raise PopbsmtpError("give a log file or --journal, not both")
    chosen = None if args.file or args.journal is not None else choose_source(settings, now)
    if args.journal is not None or (chosen is not None and chosen.kind == JOURNAL):
        # --journal DIR; --journal alone (journal_directory, else the system's); or no
        # file given and the daemon's source is the journal
        directory = args.journal or (chosen.path if chosen else "") or settings.journal_directory
        _test_journal(directory, settings, matcher, policy, now, args.json)
    else:
        source = args.file or (chosen.path if chosen else settings.logfile)
        with open_input(source, sys.stdin.buffer) as handle:
            run_test(
                handle,
                matcher,
                policy,
                now=now,
                out=sys.stdout,
                as_json=args.json,
                max_entries=settings.max_entries,
            )
    if args.read_map:
        from popbsmtp.cli.admin import grants
        from popbsmtp.doctor import compare_map

        return compare_map(settings, {row[0] for row in grants(settings)}, sys.stdout)
    return EXIT_OK


def _test_journal(directory: str, settings: config.Settings, matcher: Matcher, policy: Policy,
                  now: float, as_json: bool) -> None:  # fmt: skip
    """Every entry of that journal, with the journal trust the daemon applies."""
    from popbsmtp.cli.journaltest import run_journal_test
    from popbsmtp.sources.journal import read_journal
    from popbsmtp.sources.trust import TrustCheck

    run_journal_test(
        read_journal(directory, max_line_length=settings.max_line_length),
        matcher,
        TrustCheck(matcher.profiles, settings.journal_trust),
        policy,
        now=now,
        out=sys.stdout,
        as_json=as_json,
        max_entries=settings.max_entries,
    )


def _parse_now(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()
