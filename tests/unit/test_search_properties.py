"""Properties of the prefilter's block search and of the rfc3339 split, against plain oracles.

The block search must find exactly the lines holding some needle (the
obvious line-by-line answer), whatever the needles share or overlap; the
rfc3339 split must judge month ends and leap years as :mod:`datetime` does.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_needle_search import reference as lines_holding

from popbsmtp.parse.envelope import EnvelopeParser
from popbsmtp.parse.matcher import Matcher
from popbsmtp.profiles import Profile, Rule, registry

ALPHABET = "log)<pu=Ax\x00é"


def matcher_for(needles: tuple) -> Matcher:
    rules = tuple(
        Rule(name=f"r{n}", programs=("p",), pattern=re.escape(needle), needle=needle)
        for n, needle in enumerate(needles)
    )
    return Matcher([Profile("t", "test", rules, ())])


def reference(block: bytes, needles: tuple) -> list:
    """The obvious answer: every line holding a needle, in order."""
    return lines_holding(block, tuple(needle.encode() for needle in needles))


# Needle characters, newlines and a few others: hits, near misses and line ends are common.
BLOCKS = st.text(ALPHABET + "\n", max_size=300).map(str.encode)
NEEDLES = st.lists(st.text(ALPHABET, min_size=1, max_size=6), min_size=1, max_size=12).map(tuple)


@settings(max_examples=1000, deadline=None)
@given(BLOCKS, NEEDLES)
def test_the_block_search_finds_exactly_the_lines_holding_a_needle(block, needles):
    assert matcher_for(needles)._candidate_lines(block) == reference(block, needles)


@pytest.mark.parametrize("size", range(0, 40))
@pytest.mark.parametrize("where", ["start", "end", "middle"])
def test_a_needle_anywhere_in_a_line(size, where):
    filler = b"x" * size
    block = {"start": b"log" + filler, "end": filler + b"log", "middle": filler + b"log" + filler}
    found = matcher_for(("log", ")<"))._candidate_lines(block[where])
    assert found == [(0, len(block[where]))]


def test_a_needle_cut_by_the_block_end_is_no_hit():
    matcher = matcher_for(("log",))
    assert matcher._candidate_lines(b"x" * 30 + b"lo") == []
    assert matcher._candidate_lines(b"") == []


def test_several_hits_on_one_line_give_one_span():
    block = b"a log log )< b\nnothing\nlast )<"
    assert matcher_for(("log", ")<"))._candidate_lines(block) == [(0, 14), (23, 30)]


def test_every_profile_has_few_needles_and_none_holds_a_newline():
    needles = Matcher(list(registry().values()))._needles
    assert 1 <= len(needles) <= 32
    assert all(needle and b"\n" not in needle for needle in needles)


def test_month_ends_and_leap_years_are_judged_as_datetime_does():
    parser = EnvelopeParser("rfc3339")
    for year in (1, 4, 100, 400, 1900, 1970, 2000, 2024, 2026, 2100, 9999):
        for month in range(1, 13):
            for day in range(27, 33):
                stamp = f"{year:04d}-{month:02d}-{day:02d}T23:59:59.5+01:00"
                try:
                    expected = dt.datetime.fromisoformat(stamp).timestamp()
                except ValueError:
                    expected = None
                found = parser.parse(f"{stamp} h p: m", 0.0)
                if expected is None:
                    assert found is None, stamp
                else:
                    assert found is not None and found.time == expected, stamp
