"""FileTail.read_blocks(): blocks of complete lines, a budget per call, same lines as read()."""

import os

from support import ManualClock, append_bytes, position_after_reading, rotate_by_rename

from popbsmtp.sources.tail import FileTail


def lines_of(blocks):
    out = []
    for block in blocks:
        assert block.endswith(b"\n"), block[-20:]
        out.extend(block.split(b"\n")[:-1])
    return out


def test_blocks_hold_complete_lines_and_keep_the_partial_back(tmp_path):
    log = tmp_path / "mail.log"
    append_bytes(log, b"one\ntwo\nthr")
    tail = FileTail(str(log))
    assert tail.read_blocks() == [b"one\ntwo\n"]
    assert tail.position.offset == 8
    append_bytes(log, b"ee\n")
    assert tail.read_blocks() == [b"three\n"]
    assert tail.read_blocks() == [] and not tail.more
    assert tail.stats.lines == 3


def test_budget_splits_a_backlog_over_calls_without_losing_a_line(tmp_path):
    log = tmp_path / "mail.log"
    want = [b"line %06d" % n for n in range(300_000)]  # ~3.3 MB, several 1 MiB chunks
    append_bytes(log, b"\n".join(want) + b"\n")
    tail = FileTail(str(log))
    got, calls = [], 0
    while True:
        got += lines_of(tail.read_blocks(budget=1 << 20))
        calls += 1
        if not tail.more:
            break
    assert got == want
    assert calls >= 3
    assert tail.position.offset == os.path.getsize(log)


def test_read_is_the_blocks_split_with_overlong_lines_dropped(tmp_path):
    log = tmp_path / "mail.log"
    append_bytes(log, b"a\n" + b"x" * 50 + b"\nb\n")
    blocks_tail = FileTail(str(log), max_line_length=20)
    assert lines_of(blocks_tail.read_blocks()) == [b"a", b"x" * 50, b"b"]
    lines_tail = FileTail(str(log), max_line_length=20)
    assert lines_tail.read() == [b"a", b"b"]
    assert lines_tail.stats.overlong == 1


def test_overlong_partial_is_dropped_up_to_its_newline(tmp_path):
    log = tmp_path / "mail.log"
    tail = FileTail(str(log), max_line_length=10)
    append_bytes(log, b"ok\n" + b"y" * 30)
    assert tail.read_blocks() == [b"ok\n"]
    append_bytes(log, b"yyy\nnext\n")
    assert tail.read_blocks() == [b"next\n"]
    assert tail.stats.overlong == 1


def test_unterminated_last_line_of_a_rotated_file_is_dropped_and_counted(tmp_path):
    """A cut line may name another client (192.0.2.1 of 192.0.2.123): never a line."""
    clock = ManualClock()
    log = tmp_path / "mail.log"
    append_bytes(log, b"a1\n")
    tail = FileTail(str(log), clock=clock)
    assert tail.read_blocks() == [b"a1\n"]
    append_bytes(log, b"a2")
    rotate_by_rename(log, b"b1\n")
    assert lines_of(tail.read_blocks()) == [b"b1"]
    clock.now += 100
    assert tail.read_blocks() == []
    assert tail.stats.torn == 1


def test_initial_offset_applies_to_the_first_file_only(tmp_path):
    log = tmp_path / "mail.log"
    append_bytes(log, b"old\nnew\n")
    asked = []

    def start(fd):
        asked.append(fd)
        return 4

    tail = FileTail(str(log), initial_offset=start)
    assert tail.read() == [b"new"]
    rotate_by_rename(log, b"first\nsecond\n")
    assert tail.read() == [b"first", b"second"]  # a rotated-in file is read from byte 0
    assert len(asked) == 1


def test_saved_position_wins_over_initial_offset(tmp_path):
    log = tmp_path / "mail.log"
    append_bytes(log, b"l1\nl2\n")
    position = position_after_reading(log)
    append_bytes(log, b"l3\n")
    tail = FileTail(str(log), position, initial_offset=lambda fd: 0)
    assert tail.read() == [b"l3"]
