"""window_start(): bisecting a log on its timestamps finds where the grace window starts."""

import os
import time

from support import append, dovecot_login, write_config

from popbsmtp import config
from popbsmtp.daemon.service import Service
from popbsmtp.sources import window
from popbsmtp.sources.window import window_start


def stamp(line):
    head = line.split(b" ", 1)[0]
    return float(head) if head.isdigit() else None


def write_log(path, times, extra=b""):
    with open(path, "wb") as handle:
        for t in times:
            handle.write(b"%d some log text to make the line longer than a few bytes\n" % t)
        handle.write(extra)
    return os.open(path, os.O_RDONLY)


def offset_of_time(path, when):
    offset = 0
    with open(path, "rb") as handle:
        for line in handle:
            if stamp(line) is not None and stamp(line) >= when:
                return offset
            offset += len(line)
    raise AssertionError("no such line")


def test_finds_the_first_line_at_or_after_the_cutoff_in_a_large_log(tmp_path):
    path = tmp_path / "mail.log"
    times = [1000 + n // 3 for n in range(60_000)]  # ~4 MB: many bisection steps
    fd = write_log(path, times)
    try:
        for cutoff in (1000, 1001, 5000, 20_999, 20_000.5):
            assert window_start(fd, stamp, cutoff) == offset_of_time(path, cutoff), cutoff
    finally:
        os.close(fd)


def test_all_young_gives_zero_and_all_old_gives_the_end_of_complete_lines(tmp_path):
    path = tmp_path / "mail.log"
    fd = write_log(path, range(100, 20_100), extra=b"20100 partial line being writ")
    try:
        assert window_start(fd, stamp, 0) == 0
        complete = os.path.getsize(path) - len(b"20100 partial line being writ")
        assert window_start(fd, stamp, 10**9) == complete
    finally:
        os.close(fd)


def test_unstamped_lines_are_stepped_over_not_skipped_when_young(tmp_path):
    path = tmp_path / "mail.log"
    with open(path, "wb") as handle:
        for n in range(50_000):
            handle.write(b"%d stamped\n" % (n // 10))
            handle.write(b"-- continuation without a stamp --\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = window_start(fd, stamp, 2500)
        with open(path, "rb") as handle:
            handle.seek(offset)
            first = handle.readline()
        # just after the last old stamped line: its unstamped follower is kept
        assert first == b"-- continuation without a stamp --\n"
        assert path.read_bytes()[offset:].split(b"\n")[1] == b"2500 stamped"
    finally:
        os.close(fd)


def test_empty_and_stampless_files_start_at_zero(tmp_path):
    path = tmp_path / "mail.log"
    fd = write_log(path, [])
    assert window_start(fd, stamp, 123) == 0
    os.close(fd)
    path.write_bytes(b"no stamp here\n" * 20_000)
    fd = os.open(path, os.O_RDONLY)
    assert window_start(fd, stamp, 123) == 0
    os.close(fd)


def test_daemon_without_saved_position_skips_what_is_too_old(tmp_path, monkeypatch):
    monkeypatch.setattr(window, "SCAN", 4096)  # bisect even on this small log
    now = time.time()
    log = tmp_path / "mail.log"
    old = "".join(dovecot_login(f"192.0.2.{n % 200 + 1}", now - 7200 + n) for n in range(2000))
    append(log, old)
    append(log, dovecot_login("198.51.100.9", now - 10))
    settings = config.load(str(write_config(tmp_path, grace="30m")))
    svc = Service(settings, dry_run=True)
    svc.start()
    try:
        assert svc.keeper.writer.keys() == {"198.51.100.9"}
        assert svc.tail.stats.lines < 100  # did not read the two hours before the window
    finally:
        svc.shutdown()
