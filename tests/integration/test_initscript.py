"""The SysV init script, run for real: start, status, reload, stop, crash, double start.

Paths come from a temp sysconfig file (``POPBSMTP_SYSCONFIG``), so nothing
touches /var/run, /var/lock or /etc.  The script runs under bash with a fake
``/etc/rc.d/init.d/functions`` (as on RHEL, where /bin/sh is bash) and under
dash without one (as on Debian).
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import signal
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import pytest
from postfix_instance import postmap_query
from support import popbsmtp, wait_for, write_config

from popbsmtp.daemon.daemonize import read_pid

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "init" / "popbsmtp"
FAKE_FUNCTIONS = """\
# A stand-in for /etc/rc.d/init.d/functions: the two helpers the script uses.
[ -n "$SYSTEMCTL_SKIP_REDIRECT" ] || echo "functions would redirect to systemctl" >&2
success() { printf 'FAKE-OK'; return 0; }
failure() { printf 'FAKE-FAILED'; return 1; }
"""


@dataclass
class Init:
    shell: str
    env: Dict[str, str]
    pidfile: Path
    lockfile: Path
    log: Path
    config: Path
    socket_dir: Path

    def __call__(self, *action: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.shell, str(SCRIPT), *action],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )

    def pid(self) -> int:
        pid = read_pid(str(self.pidfile))
        assert pid is not None, "no pid in the pidfile"
        return pid

    def daemons(self) -> List[int]:
        """Live popbsmtp processes using our config (the ones this test started)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().split(") ")[1][0]
            except OSError:
                continue
            if str(self.config).encode() in cmdline and b"run" in cmdline and state != "Z":
                found.append(int(entry.name))
        return found


def require(tool: str) -> str:
    for directory in ("/bin", "/usr/bin"):
        if os.access(f"{directory}/{tool}", os.X_OK):
            return f"{directory}/{tool}"
    raise AssertionError(f"{tool} is not installed; run .ci/setup")


@pytest.fixture(params=["bash+functions", "dash"])
def init(request, pf_tmp):
    shell, _, functions = request.param.partition("+")
    (pf_tmp / "mail.log").touch()
    log = pf_tmp / "daemon.log"
    config = write_config(pf_tmp, log_target=log)
    wrapper = pf_tmp / "popbsmtp-bin"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m popbsmtp "$@"\n')
    wrapper.chmod(0o755)
    pidfile, lockfile = pf_tmp / "run" / "popbsmtp.pid", pf_tmp / "lock" / "subsys" / "popbsmtp"
    pidfile.parent.mkdir()
    # /run/popbsmtp stands here; owned by root, whom a root daemon trusts (the
    # service user popbsmtp does not exist on a test machine).
    socket_dir = pf_tmp / "run" / "popbsmtp"
    sysconfig = pf_tmp / "sysconfig"
    sysconfig.write_text(
        f'OPTIONS="--config {config}"\nPOPBSMTP={wrapper}\n'
        f"PIDFILE={pidfile}\nLOCKFILE={lockfile}\nSTOP_TIMEOUT=10\n"
        f"SOCKET_DIR={socket_dir}\nSOCKET_DIR_OWNER=root\n"
    )
    functions_file = pf_tmp / "functions"
    if functions:
        functions_file.write_text(FAKE_FUNCTIONS)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "POPBSMTP_SYSCONFIG": str(sysconfig),
        "POPBSMTP_FUNCTIONS": str(functions_file),
        "POPBSMTP_SYSTEMD_BOOTED": "no",
    }
    runner = Init(require(shell), env, pidfile, lockfile, log, config, socket_dir)
    yield runner
    for pid in runner.daemons():  # a failed test must not leave its daemon behind
        os.kill(pid, signal.SIGKILL)


def ok_mark(init: Init) -> str:
    return "FAKE-OK" if "functions" in init.shell or init.shell.endswith("bash") else "[  OK  ]"


def test_start_status_reload_stop(init):
    started = init("start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert ok_mark(init) in started.stdout
    assert "functions would redirect" not in started.stderr
    pid = init.pid()
    assert init.daemons() == [pid]
    assert init.lockfile.exists()
    assert "following " in init.log.read_text()

    status = init("status")
    assert status.returncode == 0 and f"(pid {pid}) is running" in status.stdout

    reloaded = init("reload")
    assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
    wait_for(lambda: "SIGHUP: reloading" in init.log.read_text(), what="HUP in the daemon log")
    wait_for(lambda: "configuration reloaded" in init.log.read_text(), what="reload applied")

    again = init("start")  # LSB: starting a running service succeeds and changes nothing
    assert again.returncode == 0 and "already running" in again.stdout
    assert init.daemons() == [pid] and init.pid() == pid

    stopped = init("stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert init.daemons() == []
    assert not init.pidfile.exists() and not init.lockfile.exists()
    assert "stopped" in init.log.read_text()
    status = init("status")
    assert status.returncode == 3 and "is stopped" in status.stdout


def test_crash_gives_status_1_and_start_replaces_the_stale_pidfile(init):
    assert init("start").returncode == 0
    crashed = init.pid()
    os.kill(crashed, signal.SIGKILL)
    wait_for(lambda: init.daemons() == [], what="daemon killed")
    status = init("status")
    assert status.returncode == 1 and "dead but pid file exists" in status.stdout

    init.pidfile.unlink()
    status = init("status")
    assert status.returncode == 2 and "subsys locked" in status.stdout

    assert init("start").returncode == 0
    assert init.pid() != crashed and init.daemons() == [init.pid()]
    assert init("stop").returncode == 0


def test_stale_pidfile_with_a_live_unrelated_pid_is_not_ours(init):
    init.pidfile.write_text(f"{os.getpid()}\n")  # pytest itself: alive, not popbsmtp
    assert init("status").returncode == 1
    started = init("start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert init.pid() != os.getpid()
    assert init("stop").returncode == 0


def test_restart_condrestart_and_errors(init):
    assert init("stop").returncode == 0  # stopping a stopped service succeeds
    assert init("reload").returncode == 7  # LSB: program is not running
    assert init("condrestart").returncode == 0 and init.daemons() == []
    assert init("restart").returncode == 0
    first = init.pid()
    assert init("try-restart").returncode == 0
    second = init.pid()
    assert second != first and init.daemons() == [second]
    assert init("force-reload").returncode == 0
    assert init("stop").returncode == 0
    bad = init("frobnicate")
    assert bad.returncode == 2 and "Usage:" in bad.stderr


def test_failed_start_reports_the_error(init):
    init.config.write_text(init.config.read_text() + "grace = forever\n")
    started = init("start")
    assert started.returncode != 0
    assert "grace" in started.stderr and not init.lockfile.exists()
    assert init.daemons() == []


def test_defers_to_systemctl_when_systemd_runs(init, pf_tmp):
    calls = pf_tmp / "systemctl.calls"
    fake = pf_tmp / "systemctl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    env = {**init.env, "POPBSMTP_SYSTEMD_BOOTED": "yes", "SYSTEMCTL": str(fake)}
    for action in ("start", "reload", "status", "stop"):
        result = subprocess.run(
            [init.shell, str(SCRIPT), action], env=env, capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0 and "Redirecting to" in result.stderr
    assert calls.read_text().splitlines() == [
        f"{a} popbsmtp.service" for a in ("start", "reload", "status", "stop")
    ]
    assert init.daemons() == []
    # systemd itself runs the script with SYSTEMCTL_SKIP_REDIRECT (or as PPID 1).
    env["SYSTEMCTL_SKIP_REDIRECT"] = "1"
    status = subprocess.run(
        [init.shell, str(SCRIPT), "status"], env=env, capture_output=True, text=True, timeout=30
    )
    assert status.returncode == 3 and calls.read_text().count("\n") == 4


def test_headers_agree():
    text = SCRIPT.read_text()
    chk = re.search(r"^# chkconfig:\s+(\d+)\s+(\d+)\s+(\d+)$", text, re.M)
    assert chk, "chkconfig: header"
    levels, start, stop = chk.groups()
    info = dict(
        re.findall(
            r"^# ([A-Z][\w-]+):\s+(.*)$",
            text.split("### BEGIN INIT INFO")[1].split("### END INIT INFO")[0],
            re.M,
        )
    )
    assert info["Default-Start"].split() == list(levels)
    assert sorted(info["Default-Stop"].split() + list(levels)) == list("0123456")
    assert info["Provides"] == "popbsmtp"
    assert int(start) > 80 and int(stop) < 30, "start after Postfix (80), stop before (30)"
    assert os.access(SCRIPT, os.X_OK)


def test_stop_leaves_the_table_empty_even_after_a_crash(init, pf_tmp):
    """The script's stop: the daemon empties the table; after a KILL, `withdraw` does."""
    table, client = f"lmdb:{pf_tmp}/pbs", "192.0.2.61"
    assert init("start").returncode == 0
    popbsmtp("add", client, "--config", str(init.config))  # through the running daemon
    assert postmap_query(client, table) == "OK"

    stopped = init("stop")
    assert stopped.returncode == 0 and ok_mark(init) in stopped.stdout, stopped.stderr
    assert postmap_query(client, table) is None and (pf_tmp / "pbs.lmdb").is_file()

    assert init("start").returncode == 0
    wait_for(lambda: postmap_query(client, table) == "OK", what="saved grant back at start")
    os.kill(init.pid(), signal.SIGKILL)
    wait_for(lambda: init.daemons() == [], what="daemon killed")
    assert postmap_query(client, table) == "OK"  # a killed daemon cannot empty it
    stopped = init("stop")
    assert stopped.returncode == 0 and ok_mark(init) in stopped.stdout, stopped.stderr
    assert postmap_query(client, table) is None
    assert "withdrew" not in stopped.stdout  # the status line stays one line


def test_start_makes_the_socket_directory_as_the_tmpfiles_line_does(init, pf_tmp):
    """Where no systemd-tmpfiles runs, start makes /run/popbsmtp: 2750, group postfix."""
    sysconfig = Path(init.env["POPBSMTP_SYSCONFIG"])
    sysconfig.write_text(sysconfig.read_text() + "SOCKET_DIR_OWNER=nobody\n")
    started = init("start")
    assert started.returncode == 0, started.stdout + started.stderr
    info = init.socket_dir.stat()
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o2750
    assert (info.st_uid, info.st_gid) == (pwd.getpwnam("nobody").pw_uid, postfix_gid())
    # The packages' tmpfiles.d line says the same mode and group.
    line = (ROOT / "init" / "popbsmtp.tmpfiles").read_text().splitlines()[-1]
    assert line.split() == ["d", "/run/popbsmtp", "2750", "popbsmtp", "postfix", "-"]
    assert init("stop").returncode == 0

    # One that exists is left as the admin made it (the daemon judges it).
    init.socket_dir.chmod(0o700)
    assert init("start").returncode == 0
    assert stat.S_IMODE(init.socket_dir.stat().st_mode) == 0o700
    assert init("stop").returncode == 0


@pytest.mark.parametrize("kind", ["symlink", "file"])
def test_start_refuses_a_socket_directory_that_is_not_one(init, pf_tmp, kind):
    target = pf_tmp / "elsewhere"
    target.mkdir()
    init.socket_dir.parent.mkdir(exist_ok=True)
    if kind == "symlink":
        init.socket_dir.symlink_to(target)
    else:
        init.socket_dir.write_text("")
    started = init("start")
    assert started.returncode == 1 and init.daemons() == []
    why = "is a symbolic link" if kind == "symlink" else "is not a directory"
    assert f"{init.socket_dir} {why}" in started.stderr
    assert stat.S_IMODE(target.stat().st_mode) != 0o2750  # nothing done through the link
    assert target.stat().st_gid != postfix_gid()


def test_socketmap_answers_from_the_directory_start_made(init, pf_tmp):
    """The root daemon accepts the directory start made and serves Postfix there."""
    table = f"socketmap:unix:{init.socket_dir}/socketmap:popbsmtp"
    init.config.write_text(init.config.read_text().replace(f"lmdb:{pf_tmp}/pbs", table))
    assert f"map = {table}" in init.config.read_text()
    started = init("start")
    assert started.returncode == 0, started.stdout + started.stderr + init.log.read_text()
    socket_file = init.socket_dir / "socketmap"
    info = socket_file.lstat()
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o660
    assert info.st_gid == postfix_gid()
    popbsmtp("add", "192.0.2.62", "--config", str(init.config))
    wait_for(lambda: postmap_query("192.0.2.62", table) == "OK", what="socketmap grant")
    assert init("stop").returncode == 0
    assert not socket_file.exists() and init.socket_dir.is_dir()


def postfix_gid() -> int:
    return grp.getgrnam("postfix").gr_gid
