"""FileTail across copytruncate rotations done between two reads: nothing lost, nothing twice.

Rotations are done on real files the way logrotate does them (``rotate N``:
shift ``log.N`` up, copy the log to a new ``log.1``, then truncate the log
through an open descriptor), between two ``read()`` calls of the tail: the
tail never sees the line in the live file, only in the copy.
"""

import json
import os
import shutil
from pathlib import Path

from support import ManualClock, append_bytes, rotate_by_rename

from popbsmtp.sources.position import Position
from popbsmtp.sources.tail import FileTail


def copytruncate(log: Path, rotate: int = 4, copy_name: str = "") -> Path:
    """Rotate like logrotate's copytruncate; returns the copy."""
    for n in range(rotate - 1, 0, -1):
        older = log.with_name(f"{log.name}.{n}")
        if older.exists():
            os.replace(older, log.with_name(f"{log.name}.{n + 1}"))
    copy = log.with_name(copy_name or log.name + ".1")
    with open(log, "r+b") as live, open(copy, "xb") as dst:
        shutil.copyfileobj(live, dst)
        live.truncate(0)
    return copy


def following_empty(log: Path) -> FileTail:
    """A tail on an empty log that has read it once: offset 0, nothing to match a copy by."""
    append_bytes(log, b"")
    tail = FileTail(str(log))
    assert tail.read() == []
    return tail


def saved(position: Position) -> Position:
    """The position as a restart reads it back from the state file."""
    return Position.from_json(json.loads(json.dumps(position.to_json())))


def test_empty_log_written_copied_and_truncated_before_a_read(tmp_path):
    log = tmp_path / "mail.log"
    tail = following_empty(log)
    append_bytes(log, b"login 1\n")
    copytruncate(log)
    assert os.path.getsize(log) == 0
    assert tail.read() == [b"login 1"]
    assert tail.read() == []
    append_bytes(log, b"login 2\n")
    assert tail.read() == [b"login 2"]
    assert tail.read() == []


def test_copy_then_new_lines_in_the_truncated_log_oldest_first(tmp_path):
    log = tmp_path / "mail.log"
    tail = following_empty(log)
    append_bytes(log, b"before rotation\n")
    copytruncate(log)
    append_bytes(log, b"after rotation\n")
    assert tail.read() == [b"before rotation", b"after rotation"]
    assert tail.read() == []


def test_two_copytruncates_in_a_row_before_a_read(tmp_path):
    log = tmp_path / "mail.log"
    tail = following_empty(log)
    append_bytes(log, b"first generation\n")
    copytruncate(log)
    append_bytes(log, b"second generation\n")
    copytruncate(log)
    assert tail.read() == [b"first generation", b"second generation"]
    assert tail.read() == []


def test_two_copytruncates_in_a_row_after_reading_part_of_the_log(tmp_path):
    log = tmp_path / "mail.log"
    append_bytes(log, b"already read\n")
    tail = FileTail(str(log))
    assert tail.read() == [b"already read"]
    append_bytes(log, b"rest of the first\n")
    copytruncate(log)
    append_bytes(log, b"second generation\n")
    copytruncate(log)
    assert tail.read() == [b"rest of the first", b"second generation"]
    assert tail.read() == []


def test_copy_overwriting_the_previous_copy_in_place(tmp_path):
    # shutil.copyfile onto an existing log.1 keeps its inode: only size/mtime change
    log, copy = tmp_path / "mail.log", tmp_path / "mail.log.1"
    tail = following_empty(log)
    for n in range(3):
        append_bytes(log, b"login %d\n" % n)
        shutil.copyfile(log, copy)
        os.truncate(log, 0)
        assert tail.read() == [b"login %d" % n]
    assert tail.read() == []


def test_copytruncate_with_nothing_new_reads_no_copy_again(tmp_path):
    log = tmp_path / "mail.log"
    append_bytes(log, b"one\ntwo\n")
    tail = FileTail(str(log))
    assert tail.read() == [b"one", b"two"]
    copytruncate(log)  # a copy of what we read
    assert tail.read() == []
    copytruncate(log)  # an empty log: an empty copy; log.1 moves to log.2
    assert tail.read() == []
    os.utime(log)  # the live file changes without growing: no copy is new
    assert tail.read() == []
    append_bytes(log, b"three\n")
    copytruncate(log)
    assert tail.read() == [b"three"]
    os.utime(log)
    assert tail.read() == []
    assert tail.stats.truncations == 1  # the others were never seen truncated


def test_copy_still_being_written_is_not_read_twice(tmp_path):
    log, copy = tmp_path / "mail.log", tmp_path / "mail.log.1"
    tail = following_empty(log)
    append_bytes(log, b"a login line\n")
    append_bytes(copy, b"a login")  # logrotate is copying: the live file is intact
    assert tail.read() == [b"a login line"]
    append_bytes(copy, b" line\n")
    os.truncate(log, 0)
    assert tail.read() == []
    append_bytes(log, b"next\n")
    assert tail.read() == [b"next"]


def test_rename_rotation_then_copytruncate_reads_each_line_once(tmp_path):
    log = tmp_path / "mail.log"
    clock = ManualClock()
    append_bytes(log, b"a1\n")
    tail = FileTail(str(log), clock=clock)
    assert tail.read() == [b"a1"]
    old = rotate_by_rename(log, b"")
    append_bytes(old, b"a2\n")  # syslog writes the old file until it reopens
    assert tail.read() == [b"a2"]
    append_bytes(log, b"b1\n")
    copytruncate(log)  # the renamed file moves on to mail.log.2
    assert tail.read() == [b"b1"]
    clock.now = 1000  # the renamed file is done with
    assert tail.read() == []
    append_bytes(tmp_path / "mail.log.2", b"very late\n")  # changes a file we finished
    append_bytes(log, b"b2\n")
    copytruncate(log)
    assert tail.read() == [b"b2"]
    assert tail.read() == []


def test_dateext_copy_is_found(tmp_path):
    log = tmp_path / "mail.log"
    tail = following_empty(log)
    append_bytes(log, b"login\n")
    copytruncate(log, copy_name="mail.log-20261127")
    assert tail.read() == [b"login"]
    assert tail.read() == []


def test_symlinked_or_unrelated_siblings_are_never_read(tmp_path):
    log = tmp_path / "mail.log"
    secret = tmp_path / "secret"
    append_bytes(secret, b"not a log line\n")
    tail = following_empty(log)
    os.symlink(secret, tmp_path / "mail.log.2")
    os.symlink(tmp_path / "missing", tmp_path / "mail.log.3")  # dangling
    append_bytes(tmp_path / "mail.log.lock", b"unrelated\n")
    append_bytes(log, b"login\n")
    copytruncate(log, rotate=1)
    assert tail.read() == [b"login"]
    assert tail.read() == []


def test_restart_at_offset_zero_after_a_copytruncate_while_stopped(tmp_path):
    log = tmp_path / "mail.log"
    tail = following_empty(log)
    position = saved(tail.position)
    tail.close()
    append_bytes(log, b"written while stopped\n")
    copytruncate(log)
    again = FileTail(str(log), position)
    assert again.read() == [b"written while stopped"]
    assert again.read() == []
    position = saved(again.position)
    again.close()
    third = FileTail(str(log), position)
    assert third.read() == []
    append_bytes(log, b"after\n")
    assert third.read() == [b"after"]


def test_restart_after_a_handled_copytruncate_reads_no_copy_again(tmp_path):
    log = tmp_path / "mail.log"
    tail = following_empty(log)
    append_bytes(log, b"old login\n")
    copytruncate(log)
    assert tail.read() == [b"old login"]
    position = saved(tail.position)
    tail.close()
    append_bytes(log, b"new login\n")  # the log changed: the restart looks at the copies
    again = FileTail(str(log), position)
    assert again.read() == [b"new login"]
    assert again.read() == []


def test_restart_after_two_copytruncates_while_stopped(tmp_path):
    log = tmp_path / "mail.log"
    append_bytes(log, b"x" * 300 + b"\n")
    tail = FileTail(str(log))
    assert tail.read() == [b"x" * 300]
    position = saved(tail.position)
    tail.close()
    append_bytes(log, b"first\n")
    copytruncate(log)
    append_bytes(log, b"second\n")
    copytruncate(log)
    append_bytes(log, b"third\n")
    again = FileTail(str(log), position)
    assert again.read() == [b"first", b"second", b"third"]
    assert again.read() == []


def test_position_from_an_older_state_file_still_resumes(tmp_path):
    log = tmp_path / "mail.log"
    append_bytes(log, b"1\n")
    tail = FileTail(str(log))
    assert tail.read() == [b"1"]
    data = tail.position.to_json()
    tail.close()
    del data["mtime_ns"], data["newest"]
    append_bytes(log, b"2\n")
    assert FileTail(str(log), Position.from_json(data)).read() == [b"2"]


def test_renamed_file_still_written_is_not_taken_for_a_copy(tmp_path):
    log = tmp_path / "mail.log"
    append_bytes(log, b"a1\n")
    tail = FileTail(str(log))
    assert tail.read() == [b"a1"]
    old = rotate_by_rename(log, b"")
    assert tail.read() == []
    append_bytes(old, b"a2\n")  # changes after our look at the siblings
    append_bytes(log, b"b1\n")
    copytruncate(log)  # mail.log.1 (still open, still written) moves on to mail.log.2
    assert tail.read() == [b"a2", b"b1"]
    assert tail.read() == []


def test_a_restored_old_log_is_not_taken_for_a_copy(tmp_path):
    log = tmp_path / "mail.log"
    tail = following_empty(log)
    restored = tmp_path / "mail.log.9"
    append_bytes(restored, b"from last year\n")
    os.utime(restored, (1_600_000_000, 1_600_000_000))  # cp -p from a backup
    append_bytes(log, b"login\n")
    copytruncate(log, rotate=1)
    assert tail.read() == [b"login"]


def test_after_a_restart_only_siblings_newer_than_the_newest_known_are_copies(tmp_path):
    log = tmp_path / "mail.log"
    append_bytes(log, b"")
    live_mtime = os.stat(log).st_mtime_ns
    older, newest = tmp_path / "mail.log.2", tmp_path / "mail.log.1"
    append_bytes(older, b"older\n")
    append_bytes(newest, b"newest\n")
    # both newer than the live file (a late write to a renamed one, a clock step ...)
    os.utime(older, ns=(live_mtime + 10**9, live_mtime + 10**9))
    os.utime(newest, ns=(live_mtime + 2 * 10**9, live_mtime + 2 * 10**9))
    tail = FileTail(str(log))
    assert tail.read() == []
    position = saved(tail.position)
    assert position.newest is not None and position.newest[3] == live_mtime + 2 * 10**9
    tail.close()
    append_bytes(log, b"written while stopped\n")
    assert FileTail(str(log), position).read() == [b"written while stopped"]


def test_after_a_restart_a_renamed_file_written_late_is_not_read_again(tmp_path):
    log = tmp_path / "mail.log"
    append_bytes(log, b"a1\n")
    tail = FileTail(str(log))
    assert tail.read() == [b"a1"]
    old = rotate_by_rename(log, b"")
    assert tail.read() == []
    position = saved(tail.position)
    tail.close()
    append_bytes(old, b"a2\n")  # late, and after our position was saved
    append_bytes(log, b"b1\n")
    assert FileTail(str(log), position).read() == [b"b1"]


def test_copytruncate_between_the_look_for_copies_and_the_read(tmp_path):
    """Found by the latency bench (1 login in ~1,000): the first line of an empty log.

    The tail sees the log changed at offset 0 and looks for copies: the copy
    exists but has the live file's own head, so it is the live file's twin,
    not a copy to read.  Then, before the tail reads the live file, it is
    truncated: the line is only in the copy now, which the look has already
    taken into its baseline.
    """
    log = tmp_path / "mail.log"
    tail = following_empty(log)
    append_bytes(log, b"login 1\n")
    copy = log.with_name(log.name + ".1")
    shutil.copyfile(log, copy)  # logrotate's copy, done; its truncate comes late
    looked = tail._siblings.fresh

    def look_then_truncate(*args, **kwargs):
        found = looked(*args, **kwargs)
        os.truncate(log, 0)  # between the look and the read
        return found

    tail._siblings.fresh = look_then_truncate  # type: ignore[method-assign]
    lines = tail.read()
    tail._siblings.fresh = looked  # type: ignore[method-assign]
    lines += tail.read()
    assert lines == [b"login 1"]
    assert tail.read() == []
    append_bytes(log, b"login 2\n")
    assert tail.read() == [b"login 2"]
