"""The C one-pass prefilter (popbsmtp/_needles.c) answers exactly like the Python search.

The extension is built by ``.ci/setup`` (``pip install -e``, needs gcc and the
Python headers); its absence is a failure here, not a skip: without it the
daemon silently runs the slower search.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from popbsmtp.parse import matcher as matcher_module
from popbsmtp.parse.matcher import Matcher
from popbsmtp.profiles import registry

try:
    from popbsmtp._needles import candidate_lines, newlines
except ImportError as exc:  # pragma: no cover - reported as a failure below
    candidate_lines = newlines = None
    MISSING = f"popbsmtp._needles is not built ({exc}): run .ci/setup (gcc, python3-dev)"


def one_pass(block: bytes, needles: tuple) -> list:
    assert candidate_lines is not None, MISSING
    return candidate_lines(block, needles)


def reference(block: bytes, needles: tuple) -> list:
    """The obvious answer: every line holding a needle, in order."""
    spans, start = [], 0
    for line in block.split(b"\n"):
        if any(needle in line for needle in needles):
            spans.append((start, start + len(line)))
        start += len(line) + 1
    return spans


# Needle bytes, newlines and a few others: hits, near misses and line ends are all common.
BLOCKS = st.binary(max_size=300).map(
    lambda raw: bytes(b"log\n)<pu=Ax\x00\xff"[b % 13] for b in raw)
)
NEEDLES = st.lists(
    st.binary(min_size=2, max_size=6).map(
        lambda raw: bytes(b"log)<pu=Ax\x00\xff"[b % 12] for b in raw)
    ),
    min_size=1,
    max_size=32,
).map(tuple)


@settings(max_examples=2000, deadline=None)
@given(BLOCKS, NEEDLES)
def test_one_pass_finds_exactly_the_lines_holding_a_needle(block, needles):
    assert one_pass(block, needles) == reference(block, needles)


@pytest.mark.parametrize("size", range(0, 40))
@pytest.mark.parametrize("where", ["start", "end", "middle"])
def test_a_needle_anywhere_in_blocks_around_the_vector_width(size, where):
    filler = b"x" * size
    block = {"start": b"log" + filler, "end": filler + b"log", "middle": filler + b"log" + filler}
    found = one_pass(block[where], (b"log", b")<"))
    assert found == [(0, len(block[where]))]


def test_a_needle_cut_by_the_block_end_is_no_hit():
    assert one_pass(b"x" * 30 + b"lo", (b"log",)) == []
    assert one_pass(b"", (b"log",)) == []
    assert one_pass(b"l", (b"log",)) == []


def test_several_hits_on_one_line_give_one_span():
    block = b"a log log )< b\nnothing\nlast )<"
    assert one_pass(block, (b"log", b")<")) == [(0, 14), (23, 30)]


def test_bad_needles_are_refused():
    with pytest.raises(ValueError):
        one_pass(b"abc", (b"a",))
    with pytest.raises(ValueError):
        one_pass(b"abc", (b"a\nb",))
    with pytest.raises(ValueError):
        one_pass(b"abc", tuple(bytes([65, i]) for i in range(33)))
    with pytest.raises(TypeError):
        one_pass(b"abc", [b"ab"])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        one_pass(b"abc", ("ab",))  # type: ignore[arg-type]


def test_the_matcher_uses_the_one_pass_search_with_every_profile():
    assert candidate_lines is not None, MISSING
    assert matcher_module.ACCELERATED
    matcher = Matcher(list(registry().values()))
    assert matcher._one_pass is candidate_lines


def test_matcher_answers_are_the_same_with_and_without_the_extension():
    lines = [e.line.encode() for p in registry().values() for e in p.examples]
    noise = b"2026-11-27T07:35:34.001200+00:00 mail postfix/cleanup[1]: 02313D33D9: message-id=<a>"
    block = b"\n".join(line for pair in zip(lines, [noise] * len(lines)) for line in pair)
    fast = Matcher(list(registry().values()))
    slow = Matcher(list(registry().values()))
    slow._one_pass = None
    assert fast._candidate_lines(block) == slow._candidate_lines(block)
    assert fast.match_block(block, 1.8e9) == slow.match_block(block, 1.8e9)
    positives = sum(1 for p in registry().values() for e in p.examples if e.rule)
    assert len(fast.match_block(block, 1.8e9)) >= positives > 0


def test_needles_of_every_profile_fit_the_one_pass_search():
    matcher = Matcher(list(registry().values()))
    needles = matcher._needles
    assert 1 <= len(needles) <= 32
    assert all(len(n) >= 2 and not re.search(rb"\n", n) for n in needles)


@settings(max_examples=500, deadline=None)
@given(BLOCKS)
def test_newlines_counts_like_bytes_count(block):
    assert newlines is not None, MISSING
    assert newlines(block) == block.count(b"\n")
    assert newlines(block + b"\n" * 40) == block.count(b"\n") + 40
