"""The real daemon: --daemonize with its locked pidfile, signals, reload, logging targets."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest
from postfix_instance import postmap_query
from support import Daemon, append, dovecot_login, popbsmtp, wait_for, write_config

from popbsmtp.daemon import logsetup
from popbsmtp.daemon.daemonize import read_pid
from popbsmtp.errors import EXIT_CONFIG


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose (it is not our child, so init reaps it).
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
            return False
    return True


def run_daemonized(config: Path, pidfile: Path) -> subprocess.CompletedProcess:
    return popbsmtp(
        "run", "--daemonize", "--pidfile", str(pidfile), "--config", str(config), check=False
    )


@contextlib.contextmanager
def daemonized(config: Path, pidfile: Path) -> Iterator[int]:
    """A detached daemon; killed by its pid (which we started) if a test fails."""
    result = run_daemonized(config, pidfile)
    assert result.returncode == 0, result.stderr
    pid = read_pid(str(pidfile))
    assert pid is not None
    try:
        yield pid
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not alive(pid), what="daemon killed")


def stop(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not alive(pid), timeout=15, what=f"daemon {pid} to exit")


@pytest.fixture
def setup(pf_tmp: Path):
    (pf_tmp / "mail.log").touch()
    config = write_config(pf_tmp, log_target=pf_tmp / "daemon.log")
    return config, pf_tmp / "popbsmtp.pid", pf_tmp / "daemon.log"


def test_daemonize_writes_locked_pidfile_before_parent_returns(setup):
    config, pidfile, log = setup
    with daemonized(config, pidfile) as pid:
        # The parent has exited; the pidfile already names a live, detached daemon.
        assert alive(pid)
        assert pid != os.getpid()
        assert os.getsid(pid) != os.getsid(0), "the daemon did not leave our session"
        assert "popbsmtp" in Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert "following " in log.read_text()
        with open(pidfile, "rb+") as handle, pytest.raises(OSError):
            fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        stop(pid)
    assert not pidfile.exists(), "the daemon should remove its pidfile on a clean exit"
    assert "stopped" in log.read_text()


def test_second_start_fails_at_once_naming_the_pid(setup):
    config, pidfile, _ = setup
    with daemonized(config, pidfile) as pid:
        started = time.monotonic()
        second = run_daemonized(config, pidfile)
        assert second.returncode == 1
        assert f"already running (pid {pid})" in second.stderr
        assert time.monotonic() - started < 10
        assert read_pid(str(pidfile)) == pid and alive(pid)
        stop(pid)


def test_stale_pidfile_from_a_crashed_daemon_is_replaced(setup):
    config, pidfile, _ = setup
    with daemonized(config, pidfile) as crashed:
        os.kill(crashed, signal.SIGKILL)
        wait_for(lambda: not alive(crashed), what="crashed daemon gone")
    assert read_pid(str(pidfile)) == crashed  # left behind, nobody holds its lock
    with daemonized(config, pidfile) as pid:
        assert pid != crashed and alive(pid)
        stop(pid)


def test_start_up_error_reaches_the_waiting_parent(setup, pf_tmp):
    config, pidfile, _ = setup
    bad_state = pf_tmp / "open-state"
    bad_state.mkdir(mode=0o777)
    bad_state.chmod(0o777)
    config = write_config(pf_tmp, state_dir=bad_state, log_target=pf_tmp / "daemon.log")
    result = run_daemonized(config, pidfile)
    # The exit code a setting or permission problem has in the foreground (78,
    # which RestartPreventExitStatus and init scripts act on), not a plain 1.
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "writable by others" in result.stderr and "\0" not in result.stderr
    assert not pidfile.exists()
    foreground = popbsmtp("run", "--foreground", "--config", str(config), check=False)
    assert foreground.returncode == EXIT_CONFIG and "writable by others" in foreground.stderr


def test_reload_applies_new_config_and_keeps_grants(pf_tmp):
    log = pf_tmp / "mail.log"
    table = f"lmdb:{pf_tmp}/pbs"
    # max_session 1s: an open Dovecot session holds its address for just the grace.
    config = write_config(pf_tmp, max_session="1s")
    with Daemon(config) as daemon:
        append(log, dovecot_login("192.0.2.10"))
        wait_for(lambda: postmap_query("192.0.2.10", table) == "OK", what="first grant")

        write_config(
            pf_tmp, ignore_networks="192.0.2.0/24", log_level="debug", grace="2h", max_session="1s"
        )
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("configuration reloaded; 1 clients authorized")
        append(log, dovecot_login("192.0.2.11"))
        daemon.wait_log("not granting 192.0.2.11")  # ignored now, and debug is on
        assert postmap_query("192.0.2.10", table) == "OK", "reload dropped a grant"
        assert postmap_query("192.0.2.11", table) is None

        config.write_text(config.read_text() + "no_such_option = 1\n")
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("reload failed, keeping the running configuration")
        assert "no_such_option" in daemon.log()
        append(log, dovecot_login("198.51.100.12"))
        wait_for(lambda: postmap_query("198.51.100.12", table) == "OK", what="still running")
        good = pf_tmp / "good.conf"  # the same state_dir, without the bad key
        good.write_text(config.read_text().replace("no_such_option = 1\n", ""))
        rows = [
            json.loads(line)
            for line in popbsmtp("list", "--json", "-c", str(good)).stdout.splitlines()
        ]
        expiry = {row["ip"]: dt.datetime.fromisoformat(row["expires"]).timestamp() for row in rows}
        assert expiry["198.51.100.12"] - time.time() > 3600, "the new grace (2h) applies"
        assert expiry["192.0.2.10"] - time.time() > 1500, "a reload must not cut a grant short"
        assert daemon.stop() == 0


def test_usr1_logs_statistics(pf_tmp):
    config = write_config(pf_tmp)
    with Daemon(config) as daemon:
        append(pf_tmp / "mail.log", dovecot_login("192.0.2.20"))
        daemon.wait_log("granted 192.0.2.20")
        daemon.proc.send_signal(signal.SIGUSR1)
        daemon.wait_log('"grants_active": 1')
        stats = daemon.log().split("statistics: ", 1)[1]
        assert '"lines_read": 1' in stats and '"map_writes": ' in stats
        assert daemon.stop() == 0


def test_second_term_exits_at_once_while_a_write_is_stuck(pf_tmp):
    """Hold Postfix's table lock so the daemon's write blocks; TERM, TERM."""
    config = write_config(pf_tmp)
    with Daemon(config) as daemon:
        fd = os.open(pf_tmp / "pbs.lmdb", os.O_RDWR)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)  # as a Postfix writer would
            append(pf_tmp / "mail.log", dovecot_login("192.0.2.30"))
            daemon.wait_log("granted 192.0.2.30")  # matched; the map write now waits
            daemon.proc.send_signal(signal.SIGTERM)
            daemon.wait_log("stopping")
            assert daemon.proc.poll() is None, "the first signal must wait for the batch"
            code = daemon.stop(signal.SIGTERM, timeout=5)
        finally:
            os.close(fd)
    assert code == 1
    assert "exiting at once" in daemon.log()


def test_hup_reopens_our_own_log_file(setup, pf_tmp):
    config, pidfile, log = setup
    with daemonized(config, pidfile) as pid:
        rotated = pf_tmp / "daemon.log.1"
        log.rename(rotated)
        os.kill(pid, signal.SIGHUP)
        wait_for(
            lambda: log.exists() and "configuration reloaded" in log.read_text(),
            what="new daemon.log after SIGHUP",
        )
        assert "following " in rotated.read_text()
        stop(pid)
    assert "stopped" in log.read_text()


def test_syslog_target_uses_facility_mail_and_ident(tmp_path):
    address = str(tmp_path / "log.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(address)
        server.settimeout(5)
        logsetup.setup("info", target="auto", daemon=True, syslog_address=address)
        try:
            logging.getLogger("popbsmtp").info("hello from the test")
            datagram = server.recv(4096).decode()
        finally:
            logsetup.setup("info", target="stderr")
    # <22> = facility mail (2) * 8 + severity info (6); no timestamp of our own.
    assert datagram.startswith(f"<22>popbsmtp[{os.getpid()}]: INFO: hello from the test")


def test_syslog_missing_is_a_clear_start_up_error(tmp_path):
    from popbsmtp.errors import StartupError

    with pytest.raises(StartupError, match="cannot log to syslog"):
        logsetup.setup("info", target="syslog", syslog_address=str(tmp_path / "none"))
    logsetup.setup("info", target="stderr")


def test_foreground_logs_to_stderr_without_timestamps_under_journal(pf_tmp):
    config = write_config(pf_tmp)
    env = {**os.environ, "JOURNAL_STREAM": "8:1234", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "popbsmtp", "run", "--foreground", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    first: Optional[str] = None
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    assert first is not None and first.startswith("INFO: "), first


def test_relative_config_still_reloads_after_detaching(setup, pf_tmp):
    config, pidfile, log = setup
    result = popbsmtp(
        "run",
        "--daemonize",
        "--pidfile",
        str(pidfile),
        "--config",
        config.name,
        check=False,
        cwd=str(pf_tmp),
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert result.returncode == 0, result.stderr
    pid = read_pid(str(pidfile))
    assert pid is not None
    try:
        os.kill(pid, signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in log.read_text(), what="reload from /")
        assert "reload failed" not in log.read_text()
    finally:
        stop(pid)


def test_daemonize_and_foreground_exclude_each_other(setup):
    config, pidfile, _ = setup
    result = popbsmtp(
        "run",
        "--daemonize",
        "--foreground",
        "--pidfile",
        str(pidfile),
        "--config",
        str(config),
        check=False,
    )
    assert result.returncode == 1 and "exclude each other" in result.stderr
    assert not pidfile.exists()


def test_signal_storm_while_busy_then_clean_stop(pf_tmp):
    """Signals land at random points of the loop; none may wedge it (no lock in a handler)."""
    config = write_config(pf_tmp)
    with Daemon(config) as daemon:
        assert daemon.proc is not None
        for n in range(150):
            append(pf_tmp / "mail.log", dovecot_login(f"192.0.2.{n % 250 + 1}"))
            daemon.proc.send_signal(signal.SIGHUP if n % 2 else signal.SIGUSR1)
        daemon.wait_log("granted 192.0.2.150")
        wait_for(lambda: daemon.log().count("configuration reloaded") >= 1, what="reloads applied")
        assert daemon.stop(timeout=15) == 0
    assert "Traceback" not in daemon.log()
