"""A log path that is not a regular file: logged once, never followed, never a stall.

The real daemon, real ``postmap -q``: the log is made a symlink to
``/dev/zero`` (endless bytes, no newline), a FIFO (no offsets) or a
directory, at start or while running.  Grants keep expiring on time and
SIGTERM is answered within a second.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from postfix_instance import postmap_query
from support import Daemon, append, dovecot_login, popbsmtp, wait_for, write_config

NOT_REGULAR = "is not a regular file"
GRACE = 4.0


def _granted(pf_tmp: Path, ip: str) -> bool:
    return postmap_query(ip, f"lmdb:{pf_tmp}/pbs") is not None


def _term_seconds(daemon: Daemon) -> float:
    """Send SIGTERM, wait for the exit (status 0); how long it took."""
    assert daemon.proc is not None
    start = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(15) == 0, daemon.log()
    took = time.monotonic() - start
    daemon._err.close()
    return took


def _replace(path: Path, make) -> None:
    """Put something else at ``path`` in one rename, as an attacker or a mistake would."""
    new = path.with_name(path.name + ".new")
    make(new)
    os.rename(new, path)


def test_log_turned_into_dev_zero_keeps_expiring_and_answers_sigterm(pf_tmp):
    log = pf_tmp / "mail.log"
    append(log, "")
    config = write_config(pf_tmp, grace=f"{GRACE:g}s", poll_interval="1s")
    with Daemon(config) as daemon:
        stamp = time.time()
        append(log, dovecot_login("192.0.2.40", stamp))
        wait_for(lambda: _granted(pf_tmp, "192.0.2.40"), timeout=10, what="the grant")
        _replace(log, lambda new: os.symlink("/dev/zero", new))  # seen at once (inotify)
        wait_for(lambda: not _granted(pf_tmp, "192.0.2.40"), timeout=GRACE + 8, what="the expiry")
        late = time.time() - (stamp + GRACE)
        assert late < 3.0, f"expired {late:.1f}s late"  # the poll is 1s; a stall never expires
        assert NOT_REGULAR in daemon.log()
        took = _term_seconds(daemon)
    assert took < 1.0, f"SIGTERM took {took:.2f}s"
    assert daemon.log().count(NOT_REGULAR) == 1, "the error is logged once"
    assert "Traceback" not in daemon.log()


@pytest.mark.parametrize("kind", ["fifo", "directory", "dev-zero"])
def test_daemon_starts_when_the_log_is_not_a_regular_file(pf_tmp, kind):
    log = pf_tmp / "mail.log"
    if kind == "fifo":
        os.mkfifo(log)
    elif kind == "directory":
        log.mkdir()
    else:
        os.symlink("/dev/zero", log)
    config = write_config(pf_tmp, grace="1h")
    with Daemon(config) as daemon:  # waits for "following": no ESPIPE, no EISDIR
        daemon.wait_log(NOT_REGULAR)
        popbsmtp("add", "192.0.2.41", "--for", "3s", "-c", str(config))  # the loop still works
        wait_for(lambda: _granted(pf_tmp, "192.0.2.41"), timeout=10, what="the manual grant")
        wait_for(lambda: not _granted(pf_tmp, "192.0.2.41"), timeout=10, what="its expiry")
        took = _term_seconds(daemon)
    assert took < 1.0, f"SIGTERM took {took:.2f}s"
    assert daemon.log().count(NOT_REGULAR) == 1
    assert "Traceback" not in daemon.log()


def test_log_replaced_by_a_fifo_then_a_file_again(pf_tmp):
    log = pf_tmp / "mail.log"
    append(log, "")
    config = write_config(pf_tmp, grace="1h")
    with Daemon(config) as daemon:
        _replace(log, os.mkfifo)
        daemon.wait_log(NOT_REGULAR)
        _replace(log, lambda new: append(new, dovecot_login("192.0.2.42")))
        wait_for(lambda: _granted(pf_tmp, "192.0.2.42"), timeout=10, what="the new file read")
        assert _term_seconds(daemon) < 1.0
    assert "Traceback" not in daemon.log()


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_doctor_reports_a_log_that_is_not_a_regular_file(pf_tmp, kind):
    log = pf_tmp / "mail.log"
    if kind == "fifo":
        os.mkfifo(log)  # opening it for reading would wait for a writer
    else:
        os.symlink("/dev/zero", log)  # reading it would never end
    config = write_config(pf_tmp)
    start = time.monotonic()
    result = popbsmtp("doctor", "--config", str(config), check=False)
    assert time.monotonic() - start < 30
    assert f"ERROR    log: cannot read {log}: not a regular file" in result.stdout, result.stdout
