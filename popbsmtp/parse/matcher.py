"""Turn raw log lines into :class:`Login` events using the selected profiles.

A cheap prefilter (the literal needles of every rule) runs on raw bytes
first, over a whole read block at once in the daemon; only candidate lines
get their envelope parsed and their program's rules tried.  The matcher
decides *what a line says*; whether the address may relay is
:mod:`popbsmtp.grants`' decision.

Its one piece of memory is each server's version, per profile and host, as
the server's start-up line names it: once it is known, a login line in a
form only other versions write was not written by that server, and it is
refused and counted as ``suspect``.  Until a start-up line is seen, every
form is accepted.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from typing import (
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from popbsmtp.parse.addresses import InvalidAddress, postfix_key
from popbsmtp.parse.envelope import Envelope, EnvelopeParser
from popbsmtp.profiles import SERVER, Profile, Rule

# Hosts whose server version is remembered; beyond this the memory starts
# afresh (every form accepted again), so forged host names cost bounded memory.
MAX_VERSIONS = 4096

log = logging.getLogger(__name__)


# A named tuple made without its ``__new__``: the same tuple at a third of the cost.
_make = tuple.__new__


class Login(NamedTuple):
    """A recognised login or logout.

    ``ip`` is the Postfix key, or None when the logged text is no usable
    address (then ``invalid`` says why).  ``session`` links a logout to its
    login for servers whose logout lines carry no address.  A named tuple,
    not a frozen dataclass: one is made per candidate line, and a frozen
    dataclass costs four times as much to build.
    """

    time: float
    ip: Optional[str]
    raw_ip: Optional[str]
    profile: str
    rule: str
    event: str
    session: Optional[str] = None
    invalid: Optional[str] = None

    @property
    def rule_id(self) -> str:
        return f"{self.profile}/{self.rule}"


@dataclass
class MatchStats:
    """Counters for ``popbsmtp test``, USR1 statistics and ``doctor``."""

    lines: int = 0
    candidates: int = 0
    unparseable: int = 0
    overlong: int = 0
    suspect: int = 0  # login lines in a form the server's known version never writes
    matched: Counter = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.matched is None:
            self.matched = Counter()


class Matcher:
    """Match lines against profiles; stateless apart from its counters."""

    def __init__(
        self,
        profiles: Sequence[Profile],
        parser: Optional[EnvelopeParser] = None,
        max_line_length: int = 8192,
    ) -> None:
        self.profiles = list(profiles)
        self.parser = parser or EnvelopeParser()
        self.max_line_length = max_line_length
        self.stats = MatchStats()
        self._keys = _KeyCache()
        self._forms: Dict[Tuple[str, str], str] = {}  # (profile, host) -> form it writes
        self._by_program: Dict[str, List[_Check]] = {}
        for profile in self.profiles:
            for rule in profile.rules:
                for program in rule.programs:
                    self._by_program.setdefault(program, []).append(_check(profile, rule, program))
        rules = [rule for profile in self.profiles for rule in profile.rules]
        self._needles = tuple(_shortest_needles(choose_needles(rules)))
        self._line_searches = line_searches(self._needles)

    def match(self, line: bytes, now: float) -> Optional[Login]:
        """The event one raw line (without newline) describes, or None.

        Through :meth:`match_block`, the one path the daemon, ``popbsmtp test``
        and ``doctor`` take, so examples and fuzzers check what they run.
        """
        found = self.match_block(line + b"\n", now)
        return found[0] if found else None

    def match_block(self, block: bytes, now: float) -> List[Login]:
        """The events in a block of complete lines (as the tail reads them), in log order.

        Same answers as :meth:`match` on each line, but the block is searched
        once per needle by the ``re`` engine (:func:`find_lines`) and only
        the lines around a hit are cut out: the great majority of lines cost
        no Python work at all.  An overlong line is only noticed (and
        counted) when it is a candidate; any other line yields nothing
        anyway.  Lines are not counted here: the tail that read the block
        already did.
        """
        return [login for _, login in self.match_block_at(block, now)]

    def match_block_at(self, block: bytes, now: float) -> List[Tuple[int, Login]]:
        """:meth:`match_block` with where each event's line starts in ``block``
        (``popbsmtp test`` numbers the lines it reports).

        The loop runs for every candidate line, and a call per line is a
        measurable share of it: the split and the rules are called directly,
        and the counters are added up once per block.
        """
        found = []
        limit, overlong, unparseable = self.max_line_length, 0, 0
        split, match_envelope = self.parser.split, self.match_envelope
        spans = find_lines(block, self._line_searches)
        for start, end in spans:
            if end - start > limit:
                overlong += 1
                continue
            # Invalid UTF-8 becomes U+FFFD, which no address or rule accepts.
            envelope = split(block[start:end].decode("utf-8", "replace").rstrip("\r"), now)
            if envelope is None:
                unparseable += 1
                continue
            login = match_envelope(envelope)
            if login is not None:
                found.append((start, login))
        stats = self.stats
        stats.candidates += len(spans) - overlong
        stats.overlong += overlong
        stats.unparseable += unparseable
        return found

    def _candidate_lines(self, block: bytes) -> List[Tuple[int, int]]:
        """(start, end) of each line holding a needle, sorted, newline excluded."""
        return find_lines(block, self._line_searches)

    def match_envelope(
        self, envelope: Envelope, sender_ok: Optional[Callable[[str], bool]] = None
    ) -> Optional[Login]:
        """The event the envelope describes.  ``sender_ok(profile)`` (the journal's
        trust) is asked first: an event it rejects is returned for the caller to
        refuse, and teaches nothing (no version learnt, no form judged, not counted)."""
        pid, message = envelope.pid is not None, envelope.message
        for check in self._by_program.get(envelope.program, ()):
            if check.pid is not None and check.pid != pid:
                continue  # wrong tag shape (Rule.accepts_pid): forged, or not this server
            if check.needle not in message:
                continue  # not this rule's line: cheaper to see than a failed fullmatch
            found = check.fullmatch(message)
            if found is None:
                continue
            if sender_ok is not None and not sender_ok(check.profile.name):
                return self._login(envelope, check, found)
            if check.form and self._forms and not self._form_fits(envelope, check):
                return None
            self.stats.matched[check.rule_id] += 1
            if check.has_version:
                self._learn_version(envelope, check.profile, found["version"])
            return self._login(envelope, check, found)
        return None

    def _form_fits(self, envelope: Envelope, check: _Check) -> bool:
        """Is the rule's form the one the server's known version writes?"""
        known = self._forms.get((check.profile.name, envelope.host))
        if known is None or known == check.form:
            return True
        self.stats.suspect += 1
        if self.stats.suspect == 1 or self.stats.suspect % 1000 == 0:
            log.warning(
                "refused %d %s login line(s) in the form of %s %s: %s logs in the form of %s",
                self.stats.suspect, check.profile.name, check.profile.name, check.rule.form,
                envelope.host or "this host", known,
            )  # fmt: skip
        return False

    def _learn_version(self, envelope: Envelope, profile: Profile, version: str) -> None:
        if len(self._forms) >= MAX_VERSIONS:
            self._forms.clear()
        self._forms[(profile.name, envelope.host)] = profile.form_of(version)

    def _login(self, envelope: Envelope, check: _Check, found: re.Match) -> Login:
        raw_ip = found[check.ip_group] if check.ip_group else None
        ip, invalid = self._keys.lookup(raw_ip) if raw_ip is not None else (None, None)
        session = found[check.session_group] if check.session_group else None
        if check.pid_session and envelope.pid is not None:
            session = f"{envelope.host}/{envelope.program}[{envelope.pid}]"
        return _make(
            Login,
            (envelope.time, ip, raw_ip, check.profile_name, check.rule_name, check.event, session,
             invalid),
        )  # fmt: skip


class _Check(NamedTuple):
    """One rule as the per-line loop uses it: everything looked up once."""

    fullmatch: Callable[[str], Optional[re.Match]]
    pid: Optional[bool]  # Rule.pid: whether the tag must (True) or must not carry a pid
    needle: str  # what its message must contain; empty when the program name has it
    profile: Profile
    rule: Rule
    rule_id: str
    profile_name: str
    rule_name: str
    event: str
    form: Optional[str]
    ip_group: int  # the group numbers of the address and the session id, 0 if none
    session_group: int
    pid_session: bool  # the session is the process (Rule.session "pid")
    has_version: bool


def _check(profile: Profile, rule: Rule, program: str) -> _Check:
    """``program``: the tag it is tried for.  A rule's needle is in every line it
    matches, in the message or (for servers whose lines share no text) in the
    program name; so a message without it is refused before the regex runs."""
    groups = rule.match_regex.groupindex
    needle = "" if rule.needle in program else rule.needle
    return _Check(
        rule.match_regex.fullmatch, rule.pid, needle, profile, rule, f"{profile.name}/{rule.name}",
        profile.name, rule.name, rule.event, rule.form or None, groups.get("ip", 0),
        groups.get("session", 0), rule.session == "pid",
        rule.event == SERVER and "version" in groups,
    )  # fmt: skip


def choose_needles(rules: Sequence[Rule]) -> List[str]:
    """One needle per rule, those with a choice (``Rule.also``) picked to share passes.

    A rule with one needle has it.  A rule with several takes the first that
    costs no pass of its own given what is searched already: one that
    contains a searched needle, or begins with the same byte as one
    (:func:`line_searches` makes them one pass); otherwise its first choice.
    """
    chosen = [rule.needle for rule in rules if not rule.also]
    for rule in rules:
        if rule.also:
            free = [n for n in rule.needles if any(c in n or c[:1] == n[:1] for c in chosen)]
            chosen.append(free[0] if free else rule.needle)
    return chosen


def _shortest_needles(needles: Iterable[str]) -> List[bytes]:
    """The needles to search for: one that contains another adds no candidate."""
    encoded = sorted({n.encode() for n in needles}, key=len)
    if any(b"\n" in n for n in encoded):
        raise ValueError("a rule needle cannot contain a newline")
    kept: List[bytes] = []
    for needle in encoded:
        if not any(shorter in needle for shorter in kept):
            kept.append(needle)
    return kept


LineSearch = Callable[[bytes], Iterable[int]]

# Stepping from one occurrence of a pass's first byte to the next (``bytes.find``
# of one byte is memchr) beats the ``re`` engine's byte-by-byte scan while the
# byte is rare: up to one occurrence per HIT_SPACING bytes of a block, and at
# least MIN_HITS (a followed log's small blocks).  Past that the engine takes
# the rest of the block, and the next ENGINE_BLOCKS blocks go straight to it.
HIT_SPACING = 2048
MIN_HITS = 16
ENGINE_BLOCKS = 64


def line_searches(needles: Iterable[bytes]) -> List[LineSearch]:
    """Searches that together find every needle, each giving the ends of its lines.

    A pass of the ``re`` engine costs the same whatever the needle: it steps
    through the whole block to each occurrence of the pattern's first
    literal bytes.  So needles that begin with the same byte share one pass,
    ``prefix(?:rest|rest…)``: the engine skips to their common prefix and
    only there tries the rests.  Needles that begin alike therefore cost one
    needle, which is how profiles keep the search cheap.  A pass whose first
    byte is rare in the log costs less still (:class:`_Pass`).
    """
    groups: Dict[bytes, List[bytes]] = {}
    for needle in dict.fromkeys(needles):
        groups.setdefault(needle[:1], []).append(needle)
    searches: List[LineSearch] = []
    for group in groups.values():
        prefix = _common_prefix(group)
        rests = sorted({needle[len(prefix) :] for needle in group}, key=len, reverse=True)
        tail = b"(?:" + b"|".join(map(re.escape, rests)) + b")" if rests != [b""] else b""
        engine = re.compile(re.escape(prefix) + tail + rb"[^\n]*").finditer
        searches.append(_Pass(tuple(group), engine))
    return searches


class _Pass:
    """The ends of the lines holding one of ``needles`` (which share their first byte).

    While that byte is rare it steps from one occurrence to the next with
    ``bytes.find`` (memchr, many times faster than the engine's scan) and
    looks for the needles right there; once it is frequent in a block, the
    ``re`` engine takes over from where the stepping stopped.  Both give the
    same lines.
    """

    __slots__ = ("first", "needles", "engine", "engine_blocks")

    def __init__(self, needles: Tuple[bytes, ...], engine: Callable[..., Iterator[re.Match]]):
        self.first = needles[0][:1]
        self.needles = needles
        self.engine = engine
        self.engine_blocks = 0 if self.first else -1  # an empty needle: always the engine

    def __call__(self, block: bytes) -> Iterable[int]:
        if self.engine_blocks:
            if self.engine_blocks > 0:
                self.engine_blocks -= 1
            return map(_END, self.engine(block))
        first, needles, find, starts = self.first, self.needles, block.find, block.startswith
        budget = max(MIN_HITS, len(block) // HIT_SPACING)
        ends: List[int] = []
        at = find(first)
        while at >= 0:
            budget -= 1
            if budget < 0:
                self.engine_blocks = ENGINE_BLOCKS
                ends.extend(map(_END, self.engine(block, at)))
                break
            if not starts(needles, at):
                at = find(first, at + 1)
                continue
            end = find(b"\n", at)
            if end < 0:
                ends.append(len(block))
                break
            ends.append(end)
            at = find(first, end + 1)
        return ends


def _common_prefix(needles: Sequence[bytes]) -> bytes:
    first, last = min(needles), max(needles)
    size = 0
    while size < len(first) and first[size] == last[size]:
        size += 1
    return first[:size]


def find_lines(block: bytes, searches: Sequence[LineSearch]) -> List[Tuple[int, int]]:
    """(start, end) of each line of ``block`` holding a needle, in order, newline excluded.

    One pass per first byte of the needles (:func:`line_searches`): the
    ``re`` engine or memchr skips to that byte in C, and every hit runs on to
    the end of its line, so a line is found once per pass and its end comes
    with the hit; only the hits cost Python work (two or three for a login
    line, none for most lines).
    """
    ends: Set[int] = set()
    for search in searches:
        ends.update(search(block))  # a line's end, found by any needle
    if block.endswith(b"\n"):
        ends.discard(len(block))  # the empty match an empty needle makes there: no line
    rfind = block.rfind
    return [(rfind(b"\n", 0, end) + 1, end) for end in sorted(ends)]


_END = re.Match.end


class _KeyCache:
    """Postfix keys of recently logged address texts, with the refusal reason.

    The same clients log in again and again; parsing an address costs more
    than the rest of a login line.  Bounded: emptied when full, so a flood
    of distinct addresses costs memory once, not forever.
    """

    def __init__(self, size: int = 16384) -> None:
        self._size = size
        self._known: Dict[str, Tuple[Optional[str], Optional[str]]] = {}

    def lookup(self, text: str) -> Tuple[Optional[str], Optional[str]]:
        """(key, None) or (None, why the text is no usable address)."""
        found = self._known.get(text)
        if found is None:
            try:
                found = (postfix_key(text), None)
            except InvalidAddress as exc:
                found = (None, str(exc))
            if len(self._known) >= self._size:
                self._known.clear()
            self._known[text] = found
        return found
