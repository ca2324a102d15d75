"""One generic test over every profile's annotated examples (fail2ban-style).

For every profile: each positive example is matched by exactly one rule of
all profiles (the one it names), with the expected event and Postfix key;
each negative example (failed login, injection, forgery) by none; every
rule is hit by at least one positive example.  A ReDoS budget checks that
each rule rejects or accepts hostile 10 kB messages, built from the rule's
own literals, within a small fixed time.
"""

from __future__ import annotations

import re
import time
from typing import List, Tuple

import pytest

from popbsmtp.parse.envelope import EnvelopeParser
from popbsmtp.parse.matcher import Matcher
from popbsmtp.profiles import Example, Profile, Rule, registry

PROFILES = list(registry().values())
# Examples from a server's own log file parse only when log_format names it.
OWN_LOGS = ("dovecot", "qpopper", "apple")


def _format_of(line: str) -> str:
    """The log_format that reads ``line``: auto (syslog) first, else an own-log one."""
    for name in ("auto", *OWN_LOGS):
        if EnvelopeParser(name).parse(line, NOW) is not None:
            return name
    raise AssertionError(f"example has no parseable envelope: {line!r}")


ALL_RULES: List[Tuple[Profile, Rule]] = [(p, r) for p in PROFILES for r in p.rules]
NOW = time.mktime((2026, 11, 27, 12, 0, 0, 0, 0, -1))
BUDGET = 0.05  # seconds per hostile line and rule
HOSTILE_LENGTH = 10_000


def _cases() -> List[Tuple[str, int, Example]]:
    return [(p.name, i, ex) for p in PROFILES for i, ex in enumerate(p.examples)]


def _matching_rules(line: str, own: str) -> List[str]:
    """Rules of ``own`` and of every ``auto`` profile that match ``line``.

    Profiles outside ``auto`` (dovecot1) accept shapes ``auto`` refuses as
    forged; they are only ever combined with profiles the admin names.
    """
    envelope = EnvelopeParser(_format_of(line)).parse(line, NOW)
    assert envelope is not None
    return [
        f"{profile.name}/{rule.name}"
        for profile, rule in ALL_RULES
        if (profile.auto or profile.name == own)
        and envelope.program in rule.programs
        and rule.accepts_pid(envelope.pid)
        and rule.regex.fullmatch(envelope.message)
    ]


@pytest.mark.parametrize(("profile", "index", "example"), _cases())
def test_example(profile: str, index: int, example: Example) -> None:
    found = _matching_rules(example.line, profile)
    if example.rule is None:
        assert found == [], f"negative example ({example.note}) matched {found}"
        return
    assert found == [f"{profile}/{example.rule}"], f"{example.line!r} matched {found}"
    matcher = Matcher(
        [p for p in PROFILES if p.auto or p.name == profile],
        EnvelopeParser(_format_of(example.line)),
    )
    login = matcher.match(example.line.encode(), NOW)
    assert login is not None, "the prefilter (needle) rejected a positive example"
    assert login.rule_id == f"{profile}/{example.rule}"
    assert login.event == example.event
    assert login.ip == example.ip
    if example.ip is not None:
        assert login.invalid is None


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_every_rule_hit_and_negatives_present(profile: Profile) -> None:
    hit = {ex.rule for ex in profile.examples if ex.rule}
    missing = [rule.name for rule in profile.rules if rule.name not in hit]
    assert not missing, f"rules without a positive example: {missing}"
    assert any(ex.rule is None and "fail" in ex.note for ex in profile.examples), (
        "no negative example for a failed login"
    )
    assert any(ex.rule is None and ex.note and "fail" not in ex.note for ex in profile.examples), (
        "no injection/forgery example"
    )
    for example in profile.examples:
        assert example.line.isascii() and "\n" not in example.line


def _literals(rule: Rule) -> List[str]:
    """Literal runs of the rule's pattern, the raw material of hostile lines."""
    text = re.sub(r"\\(.)", r"\1", rule.pattern)
    runs = re.findall(r"[A-Za-z0-9 ,=<>:/\"'.\[\]()@-]{2,}", text)
    return sorted({run for run in runs if run.strip()} | {rule.needle})


def _messages(profile: Profile, rule: Rule) -> List[str]:
    found = []
    for example in profile.examples:
        if example.rule != rule.name:
            continue
        envelope = EnvelopeParser(_format_of(example.line)).parse(example.line, NOW)
        if envelope is not None:
            found.append(envelope.message)
    return found


def _hostile(profile: Profile, rule: Rule) -> List[str]:
    shapes = []
    for message in _messages(profile, rule):
        # A genuine head and tail around a long hostile middle: the engine
        # has every reason to backtrack through the middle.
        for chunk in _literals(rule)[:8]:
            middle = chunk * (HOSTILE_LENGTH // len(chunk))
            half = len(message) // 2
            shapes.append(message[:half] + middle + message[half:])
            shapes.append(message[:half] + middle[:400] + message[half:])
    for literal in _literals(rule):
        shapes.append(literal * (HOSTILE_LENGTH // len(literal) + 1))
        shapes.append(rule.needle + (literal + "1.2.3.4 ") * (HOSTILE_LENGTH // (len(literal) + 8)))
    for chunk in (">, method=", " host=", "[", "(", "<", '"', " ", "1.2.3.4", "::", "a"):
        shapes.append(rule.needle + chunk * (HOSTILE_LENGTH // len(chunk)))
        shapes.append(chunk * (HOSTILE_LENGTH // len(chunk)) + rule.needle + "x")
    return [shape[: HOSTILE_LENGTH + 200] for shape in shapes]


@pytest.mark.parametrize(
    ("profile", "rule"), ALL_RULES, ids=[f"{p.name}/{r.name}" for p, r in ALL_RULES]
)
def test_redos_budget(profile: Profile, rule: Rule) -> None:
    for line in _hostile(profile, rule):
        for regex in (rule.regex, rule.match_regex):
            best = float("inf")
            for _ in range(3):  # best of three: the machine is shared
                start = time.perf_counter()
                regex.fullmatch(line)
                best = min(best, time.perf_counter() - start)
            assert best < BUDGET, f"{best * 1000:.1f} ms on {line[:60]!r}..."


@pytest.mark.parametrize(
    ("profile", "rule"), ALL_RULES, ids=[f"{p.name}/{r.name}" for p, r in ALL_RULES]
)
def test_the_matcher_regex_matches_as_the_rule_does(profile: Profile, rule: Rule) -> None:
    """The matcher runs the rule with its user field uncaptured: the same lines
    match, with the same address, session and version, hostile names included."""
    messages = list(_hostile(profile, rule))
    for example in profile.examples:
        message = example.line.split(": ", 1)[-1]
        messages += [example.line, message]
        for cut in range(1, len(message), 7):  # user-like text spliced into genuine lines
            for chunk in (">, method=", "rip=6.6.6.6, ", ")<1><x>: Disconnected", " ", "]"):
                messages.append(message[:cut] + chunk + message[cut:])
    names = [name for name in rule.regex.groupindex if name != "user"]
    assert set(names) == set(rule.match_regex.groupindex)
    matched = 0
    for message in messages:
        full, fast = rule.regex.fullmatch(message), rule.match_regex.fullmatch(message)
        assert (full is None) == (fast is None), message
        if full is not None and fast is not None:
            matched += 1
            assert [full[n] for n in names] == [fast[n] for n in names], message
    assert matched or not any(e.rule == rule.name for e in profile.examples)


def test_patterns_use_no_open_ended_repetition() -> None:
    """Bounded repetitions only: no *, + or {n,} outside character classes."""
    for profile, rule in ALL_RULES:
        source = re.sub(r"\[(?:\\.|[^\]\\])*\]", "[]", rule.regex.pattern)
        source = re.sub(r"\\.", "", source)
        assert not re.search(r"[*+]|\{[0-9]+,\}", source), f"{profile.name}/{rule.name}"
