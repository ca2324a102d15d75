"""The ``pop-before-smtp`` compatibility command, each option in a real subprocess.

The Perl-form config here is written for these tests (a Dovecot-shaped
``$pat`` of our own); popbsmtp's own config beneath it holds the test state
directory and Postfix directory, as an admin's popbsmtp.conf would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
from postfix_instance import postmap_query
from support import append, dovecot_login, popbsmtp, postfix_dir, wait_for, write_config

from popbsmtp.daemon.daemonize import read_pid

ROOT = Path(__file__).resolve().parents[2]


def compat(*args: str, **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "popbsmtp.cli.compat", *args],
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def site(pf_tmp: Path) -> Tuple[Path, Path, Path]:
    """(Perl config, popbsmtp config, mail log)."""
    log = pf_tmp / "mail.log"
    log.touch()
    base = write_config(pf_tmp, log_target=pf_tmp / "daemon.log")
    perl = pf_tmp / "pop-before-smtp-conf.pl"
    perl.write_text(
        "# an old relay helper's settings\n"
        "$grace = 20*60;\n"
        f"$file_tail{{'name'}} = '{log}';\n"
        f"$dbfile = '{pf_tmp}/relayers';\n"
        "$pat = '^[LOGTIME] \\S+ dovecot: (?:imap|pop3)-login: ' .\n"
        "    'Login: user=\\S+, rip=(\\S+), lip=';\n"
        "1;\n"
    )
    return perl, base, log


def test_entry_point_is_declared() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert 'pop-before-smtp = "popbsmtp.cli.compat:main"' in text


def test_version() -> None:
    result = compat("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("version: popbsmtp ")


def test_dumpconfig_translates_config_and_flags(site) -> None:
    perl, base, log = site
    result = compat("--config", str(perl), "--popbsmtp-config", str(base), "--dumpconfig")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"config file: {perl}" in out
    assert "grace = 20m" in out and f"logfile = {log}" in out
    assert f"map = hash:{perl.parent}/relayers" in out and "profiles = dovecot" in out
    flagged = compat(
        "--config", str(perl), "--popbsmtp-config", str(base), "--dumpconfig",
        "--grace", "600", "--watchlog", "/var/log/other.log", "--dbfile", "/etc/postfix/x",
    )  # fmt: skip
    assert flagged.returncode == 0, flagged.stderr
    assert "grace = 10m" in flagged.stdout
    assert "logfile = /var/log/other.log" in flagged.stdout
    assert "map = hash:/etc/postfix/x" in flagged.stdout


def test_without_perl_config_flags_apply_to_popbsmtp_config(site) -> None:
    _, base, _ = site
    result = compat("--popbsmtp-config", str(base), "--dumpconfig", "--dbfile", "/etc/postfix/y")
    assert result.returncode == 0, result.stderr
    assert "map = hash:/etc/postfix/y" in result.stdout
    assert "state_dir = " in result.stdout and str(base.parent) in result.stdout


def test_list_shows_grants(site) -> None:
    perl, base, _ = site
    popbsmtp("add", "203.0.113.9", "--config", str(base))
    result = compat("--popbsmtp-config", str(base), "--list")
    assert result.returncode == 0, result.stderr
    assert "203.0.113.9" in result.stdout


def test_nowrite_reprocess_is_popbsmtp_test(site) -> None:
    perl, base, log = site
    append(log, dovecot_login("203.0.113.20"))
    args = ("--config", str(perl), "--popbsmtp-config", str(base))
    result = compat(*args, "--nowrite", "--reprocess")
    assert result.returncode == 0, result.stderr
    assert "203.0.113.20" in result.stdout
    assert not Path(f"{perl.parent}/relayers.db").exists()


@pytest.mark.parametrize(
    "args, hint",
    [
        (("--reprocess",), "popbsmtp test"),
        (("--watchlog=-",), "popbsmtp test -"),
        (("--grace", "0"), "positive"),
        (("--grace", "soon"), "invalid int"),
    ],
)
def test_options_it_cannot_honour_exit_2(site, args, hint) -> None:
    _, base, _ = site
    result = compat("--popbsmtp-config", str(base), *args)
    assert result.returncode == 2
    assert hint in result.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        return not Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    return False


@contextlib.contextmanager
def _stopped_at_end(pidfile: Path) -> Iterator[int]:
    pid = wait_for(lambda: read_pid(str(pidfile)), what="pidfile")
    try:
        yield pid
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not _alive(pid), timeout=15, what="daemon to stop")


def test_daemon_with_pidfile_logto_and_translated_config(site) -> None:
    perl, base, log = site
    pidfile = perl.parent / "pbs.pid"
    own_log = perl.parent / "own.log"
    result = compat(
        "--config", str(perl), "--popbsmtp-config", str(base), "--postfix-dir", postfix_dir(),
        f"--daemon={pidfile}", "--logto", str(own_log), "--flock",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with _stopped_at_end(pidfile) as pid:
        wait_for(lambda: own_log.exists() and "following" in own_log.read_text(), timeout=15)
        append(log, dovecot_login("203.0.113.30"))
        table = f"hash:{perl.parent}/relayers"
        wait_for(lambda: postmap_query("203.0.113.30", table) is not None, timeout=15)
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not _alive(pid), timeout=15, what="daemon to stop")
    assert "granted 203.0.113.30" in own_log.read_text()


def test_foreground_debug_nowrite(site) -> None:
    perl, base, log = site
    proc = subprocess.Popen(
        [sys.executable, "-m", "popbsmtp.cli.compat", "--config", str(perl),
         "--popbsmtp-config", str(base), "--debug", "--nowrite"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: List[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        wait_for(lambda: any("following" in line for line in lines), timeout=15)
        assert "running popbsmtp run --foreground --dry-run" in lines[0]
        assert "log_level=debug" in lines[0]
        append(log, dovecot_login("203.0.113.40"))
        wait_for(lambda: any("203.0.113.40" in line for line in lines), timeout=15)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        reader.join(timeout=15)
    assert not Path(f"{perl.parent}/relayers.db").exists()
