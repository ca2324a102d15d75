"""OpenSessions against a plain list model: same answers after any sequence of changes.

The structure keeps sessions in arrays and two hash tables without keys
(:mod:`popbsmtp.policy.opensessions`); the model keeps the queue as a list of
entries and answers every question by scanning it.  Ids are picked so that
several share a home slot (multiples of 8 and 64), and with one shard the
addresses share its table too, which exercises probing and the back-shift
that frees a slot; the queue is trimmed and compacted after a handful of
entries, so those run in almost every example.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from popbsmtp.policy import opensessions
from popbsmtp.policy.opensessions import Closed, OpenSessions

SIDS = [0, 1, 8, 16, 64, 128, 7, 2**59 + 8]
IPS = ["192.0.2.1", "192.0.2.2", "2001:db8::1", "198.51.100.7"]


@dataclass
class Entry:
    sid: int
    ip: str
    start: float
    open: bool = True


class Model:
    """The queue as a list; every answer found by scanning it."""

    def __init__(self) -> None:
        self.queue: List[Entry] = []
        self.head = 0

    def live(self) -> Iterator[Entry]:
        return (e for e in self.queue[self.head :] if e.open)

    def address(self, sid: int) -> Optional[str]:
        return next((e.ip for e in self.live() if e.sid == sid), None)

    def latest_start(self, ip: str) -> Optional[float]:
        return max((e.start for e in self.live() if e.ip == ip), default=None)

    def open(self, sid: int, ip: str, start: float, several: bool) -> Optional[str]:
        held = self.address(sid)
        if held is not None and (not several or held != ip):
            return held
        self.queue.append(Entry(sid, ip, start))
        return None

    def close(self, sid: int) -> Optional[Closed]:
        oldest = next((e for e in self.live() if e.sid == sid), None)
        if oldest is None:
            return None
        oldest.open = False
        return Closed(oldest.ip, oldest.start, self.latest_start(oldest.ip))

    def expire(self, limit: float) -> List[str]:
        gone = []
        while self.head < len(self.queue):
            entry = self.queue[self.head]
            if entry.open:
                if entry.start > limit:
                    break
                entry.open = False
                gone.append(entry.ip)
            self.head += 1
        return gone


Op = Tuple[str, int, int, float]
ops = st.lists(
    st.tuples(
        st.sampled_from(["open", "open", "open", "open several", "close", "expire"]),
        st.integers(0, len(SIDS) - 1),
        st.integers(0, len(IPS) - 1),
        st.floats(0, 100, allow_nan=False),
    ),
    max_size=200,
)


def run(operations: List[Op]) -> None:
    sessions, model = OpenSessions(), Model()
    for name, s, i, t in operations:
        sid, ip = SIDS[s], IPS[i]
        if name.startswith("open"):
            several = name == "open several"
            assert sessions.open(sid, ip, t, several) == model.open(sid, ip, t, several)
        elif name == "close":
            assert sessions.close(sid) == model.close(sid)
        else:
            assert list(sessions.expire(t)) == model.expire(t)
        assert len(sessions) == sum(1 for _ in model.live())
        assert sessions.queued() >= len(sessions)
        for sid in SIDS:
            assert sessions.address(sid) == model.address(sid), (name, sid)
        for ip in IPS:
            assert sessions.latest_start(ip) == model.latest_start(ip), (name, ip)
            assert sessions.holds(ip) == (model.latest_start(ip) is not None)


@settings(max_examples=1500, deadline=None)
@given(ops)
def test_any_sequence_gives_the_models_answers(operations: List[Op]) -> None:
    with (
        mock.patch.object(opensessions, "PRUNE_EVERY", 2),
        mock.patch.object(opensessions, "QUEUE_TRIM", 3),
        mock.patch.object(opensessions, "SHARDS", 1),  # every key in one small table
    ):
        run(operations)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_without_trimming_or_compaction_too(operations: List[Op]) -> None:
    with (
        mock.patch.object(opensessions, "PRUNE_EVERY", 10**9),
        mock.patch.object(opensessions, "QUEUE_TRIM", 10**9),
    ):
        run(operations)


def test_many_sessions_grow_the_tables_and_stay_consistent() -> None:
    """Thousands of ids and addresses: the tables double several times, then empty."""
    rng = random.Random(7)
    sessions = OpenSessions()
    opened, starts = {}, {}
    for n in range(20_000):
        sid = rng.getrandbits(60)
        ip = f"10.0.{n >> 8 & 255}.{n & 255}"
        sessions.open(sid, ip, float(n))
        opened[sid], starts[sid] = ip, float(n)
    assert len(sessions) == 20_000
    assert all(sessions.address(sid) == ip for sid, ip in opened.items())
    for sid in list(opened)[::2]:
        assert sessions.close(sid) == (opened.pop(sid), starts[sid], None)
    assert all(sessions.address(sid) == ip for sid, ip in opened.items())
    assert sorted(sessions.expire(1e9)) == sorted(opened.values())
    assert len(sessions) == 0 and sessions.queued() == 0
    assert all(sessions.address(sid) is None for sid in opened)


def test_an_open_session_costs_under_100_bytes() -> None:
    """The point of the module: no Python object per session (the address is shared)."""
    sessions = OpenSessions()
    ips = [f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in range(100_000)]
    for n, ip in enumerate(ips):
        sessions.open(n * 2654435761 % 2**60, ip, float(n))
    assert sessions.footprint() / len(sessions) < 100, sessions.footprint() / len(sessions)


def test_an_address_held_by_several_sessions_shares_one_string() -> None:
    sessions = OpenSessions()
    first = "".join(["192.0.2.", "9"])
    second = "".join(["192.0.2", ".9"])
    assert first == second and first is not second
    assert sessions.open(1, first, 1.0) is None
    assert sessions.open(2, second, 2.0) is None
    assert sessions.address(2) is first
    assert sessions.open(2, "192.0.2.10", 3.0) == first  # refused: id 2 is open
    assert sessions.open(2, first, 3.0, several=True) is None
    assert len(sessions) == 3
