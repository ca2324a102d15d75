"""The state snapshot: streamed save, row-at-a-time load, old snapshots, damage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from popbsmtp.grants.state import SAVE_CHUNK, Snapshot, StateFile
from popbsmtp.sources.position import Position

ROWS = [
    ("192.0.2.1", 1_700_000_000.25, "dovecot", "login"),
    ("2001:db8::1", 1_700_000_100.1, "manual", "add"),
    ("192.0.2.2", 1_700_000_000.5, "dovecot", "login"),
]
POSITION = Position("/var/log/mail.log", 2049, 77, 12345, 40, "abc", 1_700_000_000_000_000_000)


def saved(tmp_path: Path, snap: Snapshot) -> StateFile:
    state = StateFile(str(tmp_path))
    state.save(snap)
    return state


def test_round_trip_from_an_iterator(tmp_path: Path) -> None:
    state = saved(tmp_path, Snapshot(iter(ROWS), POSITION, {"note": [1, "x"]}, saved=42.5))
    snap = state.load()
    assert list(snap.grants) == ROWS
    assert list(snap.grants) == ROWS  # loaded rows can be read again
    assert (snap.position, snap.extra, snap.saved) == (POSITION, {"note": [1, "x"]}, 42.5)
    # Still one plain JSON document, as json.loads reads it.
    data = json.loads(Path(state.path).read_text())
    assert data["version"] == 1 and data["grants"] == [list(row) for row in ROWS]


def test_many_rows_stream_in_chunks(tmp_path: Path) -> None:
    rows = [(f"10.0.{n >> 8}.{n & 255}", 1e9 + n / 3, "dovecot", "login") for n in range(5000)]
    rows += [(f"10.1.0.{n}", 2e9, f"p{n}", "r") for n in range(3)]
    assert len(rows) > SAVE_CHUNK
    snap = saved(tmp_path, Snapshot(iter(rows), None)).load()
    assert list(snap.grants) == rows
    assert len(snap.grants) == len(rows)  # type: ignore[arg-type]


def test_empty_snapshot(tmp_path: Path) -> None:
    snap = saved(tmp_path, Snapshot([], None)).load()
    assert list(snap.grants) == [] and snap.position is None


@pytest.mark.parametrize(
    "document",
    [
        # as json.dumps wrote it before grants were streamed: grants before extra keys
        {"version": 1, "saved": 7.0, "position": None, "grants": ROWS, "extra": {"a": 1}},
        # any key order, grants first
        {"grants": ROWS, "extra": {"a": 1}, "position": None, "saved": 7.0, "version": 1},
    ],
)
@pytest.mark.parametrize("indent", [None, 2])
def test_old_snapshots_still_read(tmp_path: Path, document: dict, indent: object) -> None:
    (tmp_path / "state.json").write_text(json.dumps(document, indent=indent))  # type: ignore[arg-type]
    snap = StateFile(str(tmp_path)).load()
    assert list(snap.grants) == ROWS
    assert snap.extra == {"extra": {"a": 1}} and snap.saved == 7.0


@pytest.mark.parametrize(
    "text",
    [
        '{"version":1,"position":null}',  # no grants
        '{"version":1,"grants":[],"grants":[]}',  # twice
        '{"version":2,"grants":[]}',
        '{"version":1,"grants":[]} trailing',
        '{"version":1,"grants":[["192.0.2.1",1.0,"p"]]}',
        '{"version":1,"grants":[["192.0.2.1",NaN,"p","r"]]}',
        '{"version":1,"grants":[["192.0.2.1",Infinity,"p","r"]]}',
        '{"version":1,"grants":[["unknown",1.0,"p","r"]]}',
        '{"version":1,"grants":[["192.0.2.1",1.0,"p","r"] ["192.0.2.2",1.0,"p","r"]]}',
        '{"version":1,"grants":{}}',
        '{"version":1,"grants":[["192.0.2.1",1.0,"p","r"]',
        '["version", 1]',
        "",
    ],
)
def test_damaged_snapshots_are_set_aside(tmp_path: Path, text: str) -> None:
    (tmp_path / "state.json").write_text(text)
    snap = StateFile(str(tmp_path)).load()
    assert list(snap.grants) == [] and snap.position is None
    assert not (tmp_path / "state.json").exists()
    assert list(tmp_path.glob("state.json.corrupt-*"))


def test_rows_with_escapes_take_the_full_decoder(tmp_path: Path) -> None:
    text = (
        '{"version":1,"grants":[["192.0.2.1",1.5e9,"dove\\u0063ot","log\\"in"],'
        '["192.0.2.2",7,"manual","add"]],"position":null}'
    )
    (tmp_path / "state.json").write_text(text)
    snap = StateFile(str(tmp_path)).load()
    assert list(snap.grants) == [
        ("192.0.2.1", 1.5e9, "dovecot", 'log"in'),
        ("192.0.2.2", 7.0, "manual", "add"),
    ]
