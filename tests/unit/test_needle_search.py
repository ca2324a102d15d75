"""The pure-Python prefilter finds exactly the lines holding a needle.

:func:`popbsmtp.parse.matcher.find_lines` is what the daemon's block path (and so
every login) goes through; a line it misses is a lost login, a line it adds
costs an envelope parse.  Checked against the obvious line-by-line answer on
blocks made of needle bytes, newlines and near misses.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from popbsmtp.parse.matcher import ENGINE_BLOCKS, Matcher, find_lines, line_searches
from popbsmtp.profiles import registry


def reference(block: bytes, needles: tuple) -> list:
    """Every line holding a needle, in order (a block need not end with a newline)."""
    spans, start = [], 0
    for line in block.split(b"\n"):
        if any(needle in line for needle in needles):
            spans.append((start, start + len(line)))
        start += len(line) + 1
    return spans


BLOCKS = st.binary(max_size=300).map(
    lambda raw: bytes(b"log\n)<pu=Ax\x00\xff"[b % 13] for b in raw)
)
NEEDLES = st.lists(
    st.binary(min_size=1, max_size=6).map(
        lambda raw: bytes(b"log)<pu=Ax\x00\xff"[b % 12] for b in raw)
    ),
    min_size=1,
    max_size=12,
).map(tuple)


@settings(max_examples=3000, deadline=None)
@given(BLOCKS, NEEDLES)
def test_finds_exactly_the_lines_holding_a_needle(block, needles):
    assert find_lines(block, line_searches(needles)) == reference(block, needles)


def test_several_hits_on_one_line_give_one_span():
    block = b"a log log )< b\nnothing\nlast )<"
    assert find_lines(block, line_searches((b"log", b")<"))) == [(0, 14), (23, 30)]


def test_a_needle_cut_by_the_block_end_is_no_hit():
    searches = line_searches((b"log",))
    assert find_lines(b"x" * 30 + b"lo", searches) == []
    assert find_lines(b"", searches) == []


def test_an_empty_needle_finds_every_line_but_none_past_the_last_newline():
    assert find_lines(b"a\n\nb\n", line_searches((b"",))) == [(0, 1), (2, 2), (3, 4)]
    assert find_lines(b"a\nb", line_searches((b"",))) == [(0, 1), (2, 3)]


def test_the_matcher_searches_every_profile_needle():
    lines = [e.line.encode() for p in registry().values() for e in p.examples]
    block = b"\n".join(lines) + b"\n"
    matcher = Matcher(list(registry().values()))
    expected = reference(block, matcher._needles)
    assert matcher._candidate_lines(block) == expected
    assert len(expected) >= sum(1 for p in registry().values() for e in p.examples if e.rule)


def test_needles_that_begin_alike_share_one_pass():
    """One pass of the engine per first byte: the profiles' cost is their first bytes."""
    searches = line_searches((b"Login: user=<", b"Logged in: user=<", b")<", b"Log"))
    assert len(searches) == 2
    block = b"a Logged in: user=<x\nb )<\nc Login: user=<y\nd Logg\ne Log\n"
    assert find_lines(block, searches) == reference(block, (b"Login: user=<", b")<", b"Log"))


def test_a_rare_first_byte_is_stepped_to_and_a_frequent_one_left_to_the_engine():
    """Both ways of a pass give the same lines; the engine takes over where the
    byte is frequent, for the rest of the block and the next blocks."""
    needles = (b"Killed with signal ", b"Kiss")
    (search,) = line_searches(needles)
    lines = [b"noise %d\n" % n for n in range(4000)]  # 48 KiB: 23 occurrences may be stepped to
    for n in range(0, 4000, 400):
        lines[n], lines[n + 200] = b"line Killed with signal 15\n", b"noise K\n"
    rare = b"".join(lines)
    assert find_lines(rare, [search]) == reference(rare, needles)
    assert search.engine_blocks == 0  # stepped all the way: a K every few lines is rare
    frequent = b"K" * 3000 + b"\n" + b"x Killed with signal 9\n" + b"Kiss\n" + b"KK\n"
    assert find_lines(frequent, [search]) == reference(frequent, needles)
    assert search.engine_blocks == ENGINE_BLOCKS  # gave up stepping mid-block
    for _ in range(ENGINE_BLOCKS):
        assert find_lines(rare, [search]) == reference(rare, needles)
    assert search.engine_blocks == 0  # the engine's blocks are over: stepping again
    assert find_lines(rare, [search]) == reference(rare, needles)
    assert search.engine_blocks == 0


def test_stepping_and_the_engine_agree_on_hits_cut_by_the_block_end():
    for block in (b"a Kil", b"a Killed with signal ", b"Killed with signal \nKill"):
        needles = (b"Killed with signal ",)
        assert find_lines(block, line_searches(needles)) == reference(block, needles)
