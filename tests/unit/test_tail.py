"""FileTail on real files: appends, partial lines, every rotation style, resume."""

import os

from support import ManualClock, append_bytes, position_after_reading, rotate_by_rename

from popbsmtp.sources.tail import FileTail


def test_appended_lines_and_partial_last_line(tmp_path):
    log = tmp_path / "mail.log"
    append_bytes(log, b"one\ntwo\nthr")
    tail = FileTail(str(log))
    assert tail.read() == [b"one", b"two"]
    assert tail.read() == []
    append_bytes(log, b"ee\nfour\n")
    assert tail.read() == [b"three", b"four"]
    assert tail.position.offset == os.path.getsize(log)


def test_missing_at_start_then_created(tmp_path, caplog):
    log = tmp_path / "mail.log"
    tail = FileTail(str(log))
    assert tail.read() == [] and tail.read() == []
    assert caplog.text.count("waiting for") == 1
    append_bytes(log, b"hello\n")
    assert tail.read() == [b"hello"]


def test_rename_and_create_reads_rest_of_old_file_first(tmp_path):
    log = tmp_path / "mail.log"
    clock = ManualClock()
    append_bytes(log, b"a1\n")
    tail = FileTail(str(log), clock=clock)
    assert tail.read() == [b"a1"]
    append_bytes(log, b"a2\n")
    rotate_by_rename(log, b"b1\n")
    assert tail.read() == [b"a2", b"b1"]
    # syslog keeps writing the old file until it is told to reopen
    append_bytes(tmp_path / "mail.log.1", b"a3\n")
    append_bytes(log, b"b2\n")
    assert tail.read() == [b"a3", b"b2"]
    clock.now = 1000
    append_bytes(tmp_path / "mail.log.1", b"late\n")
    assert tail.read() == [b"late"]
    assert tail.read() == []
    assert tail.stats.rotations == 1


def test_copytruncate_recovers_lines_from_the_copy(tmp_path):
    log = tmp_path / "mail.log"
    append_bytes(log, b"x" * 300 + b"\nl1\n")
    tail = FileTail(str(log))
    assert tail.read() == [b"x" * 300, b"l1"]
    append_bytes(log, b"l2\n")  # written after our read, before the copy
    with open(log, "rb") as src, open(tmp_path / "mail.log.1", "wb") as dst:
        dst.write(src.read())
    os.truncate(log, 0)
    append_bytes(log, b"n1\n")
    assert tail.read() == [b"l2", b"n1"]
    assert tail.stats.truncations == 1


def test_truncate_and_refill_beyond_offset_is_detected_by_head(tmp_path):
    log = tmp_path / "mail.log"
    append_bytes(log, b"old1\n")
    tail = FileTail(str(log))
    assert tail.read() == [b"old1"]
    with open(log, "wb") as handle:
        handle.write(b"new1\nnew2\n")
    assert tail.read() == [b"new1", b"new2"]
    assert tail.stats.truncations == 1


def test_delete_then_late_recreate(tmp_path, caplog):
    caplog.set_level("INFO")
    log = tmp_path / "mail.log"
    append_bytes(log, b"a\n")
    tail = FileTail(str(log))
    assert tail.read() == [b"a"]
    os.unlink(log)
    assert tail.read() == []
    assert f"{log} is gone (rotated or removed)" in caplog.text
    append_bytes(log, b"b\n")
    assert tail.read() == [b"b"]


def test_resume_from_position_no_duplicates_no_gaps(tmp_path):
    log = tmp_path / "mail.log"
    append_bytes(log, b"1\n2\n3")
    tail = FileTail(str(log))
    assert tail.read() == [b"1", b"2"]
    position = tail.position
    tail.close()
    append_bytes(log, b"\n4\n")
    again = FileTail(str(log), position)
    assert again.read() == [b"3", b"4"]


def test_resume_after_rotation_while_stopped(tmp_path):
    log = tmp_path / "mail.log"
    append_bytes(log, b"1\n")
    tail = FileTail(str(log))
    assert tail.read() == [b"1"]
    position = tail.position
    tail.close()
    append_bytes(log, b"2\n")
    rotate_by_rename(log, b"3\n")
    assert FileTail(str(log), position).read() == [b"2", b"3"]


def test_inode_reuse_is_not_mistaken_for_the_old_file(tmp_path):
    log = tmp_path / "mail.log"
    append_bytes(log, b"first file line\n")
    position = position_after_reading(log)
    os.unlink(log)
    append_bytes(log, b"second file, longer line\n")  # may get the same inode
    assert FileTail(str(log), position).read() == [b"second file, longer line"]


def test_overlong_lines_are_counted_and_skipped(tmp_path):
    log = tmp_path / "mail.log"
    append_bytes(log, b"ok\n" + b"z" * 50 + b"\nfine\n")
    tail = FileTail(str(log), max_line_length=20)
    assert tail.read() == [b"ok", b"fine"]
    assert tail.stats.overlong == 1
    append_bytes(log, b"y" * 30)  # overlong partial: dropped before its newline arrives
    assert tail.read() == []
    append_bytes(log, b"y" * 30 + b"\nafter\n")
    assert tail.read() == [b"after"]
    assert tail.stats.overlong == 2


def test_head_digest_is_sha1_so_saved_positions_stay_valid():
    """Positions saved by any version hold SHA-1 hex digests of the log's first bytes."""
    from popbsmtp.sources.siblings import digest

    assert digest(b"abc") == "a9993e364706816aba3e25717850c26c9cd0d89d"
