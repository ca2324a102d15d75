"""The socketmap directory the packages make, used by the real daemon as an unprivileged user.

The directory is made by the real ``systemd-tmpfiles --create`` from the
shipped init/popbsmtp.tmpfiles line (only its path and owner changed: a
temporary path, and ``nobody`` for the service user this machine lacks).  The
real ``popbsmtp run --foreground`` then runs as that user, without group
postfix, as the unit runs it: its start-up check must accept the directory,
its socket must get group postfix, and a process of group postfix (smtpd's)
must get answers from it while others cannot connect.  Without the setgid bit
the start fails with exit status 78, saying how to fix it.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

from support import append, dovecot_login, wait_for, wait_started, write_config

from popbsmtp.doctor.socketmap import ask
from popbsmtp.maps.socketmap import parse_endpoint

ROOT = Path(__file__).resolve().parents[2]
TMPFILES = ROOT / "init" / "popbsmtp.tmpfiles"
SERVICE = pwd.getpwnam("nobody")  # stands in for the service user popbsmtp


def tool(name: str) -> str:
    path = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        raise AssertionError(f"{name} is not installed; run .ci/setup")
    return path


def shipped_line() -> list:
    lines = [ln for ln in TMPFILES.read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == 1, lines
    return lines[0].split()


def made_by_tmpfiles(parent: Path) -> Path:
    """The shipped line for a directory under ``parent``, made by systemd-tmpfiles."""
    kind, path, mode, user, group, age = shipped_line()
    assert (kind, path, user, age) == ("d", "/run/popbsmtp", "popbsmtp", "-")
    directory = parent / "popbsmtp"
    config = parent / "popbsmtp-tmpfiles.conf"
    config.write_text(f"{kind} {directory} {mode} {SERVICE.pw_name} {group} {age}\n")
    made = subprocess.run(
        [tool("systemd-tmpfiles"), "--create", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    return directory


def start_as_service_user(work: Path, table: str) -> subprocess.Popen:
    """The daemon as the unit runs it: the service user, its own group only."""
    (work / "mail.log").touch()
    state = work / "state"
    state.mkdir(mode=0o700)
    os.chown(state, SERVICE.pw_uid, SERVICE.pw_gid)
    config = write_config(work, map=table)
    command = [
        tool("setpriv"), f"--reuid={SERVICE.pw_uid}", f"--regid={SERVICE.pw_gid}",
        "--clear-groups", sys.executable, "-m", "popbsmtp", "run", "--foreground",
        "--config", str(config),
    ]  # fmt: skip
    with open(work / "daemon.err", "wb") as err:
        return subprocess.Popen(
            command, stderr=err, cwd=ROOT, env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
        )


def ask_as(uid: int, gid: int, path: str, key: str) -> subprocess.CompletedProcess:
    """One socketmap request from another user, as smtpd (uid postfix) would send it."""
    script = (
        "import sys\n"
        "from popbsmtp.doctor.socketmap import ask\n"
        "from popbsmtp.maps.socketmap import parse_endpoint\n"
        "print(ask(parse_endpoint(sys.argv[1]), sys.argv[2]))\n"
    )
    return subprocess.run(
        [tool("setpriv"), f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
         sys.executable, "-c", script, f"unix:{path}:popbsmtp", key],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip


def test_the_service_user_serves_postfix_from_the_packaged_directory(pf_tmp):
    directory = made_by_tmpfiles(pf_tmp)
    info = directory.stat()
    postfix_gid = grp.getgrnam("postfix").gr_gid
    assert stat.S_IMODE(info.st_mode) == 0o2750
    assert (info.st_uid, info.st_gid) == (SERVICE.pw_uid, postfix_gid)
    assert postfix_gid not in os.getgrouplist(SERVICE.pw_name, SERVICE.pw_gid)

    path = directory / "socketmap"
    table = f"socketmap:unix:{path}:popbsmtp"
    proc = start_as_service_user(pf_tmp, table)
    err = pf_tmp / "daemon.err"
    try:
        wait_started(proc, err, "daemon started")
        assert f"answering socketmap lookups on {path}" in err.read_text()
        sock = path.lstat()
        assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o660
        assert (sock.st_uid, sock.st_gid) == (SERVICE.pw_uid, postfix_gid)

        append(pf_tmp / "mail.log", dovecot_login("192.0.2.63"))
        point = parse_endpoint(f"unix:{path}:popbsmtp")
        wait_for(lambda: ask(point, "192.0.2.63").startswith("OK"), timeout=20, what="grant")
        # smtpd's user (group postfix) reaches the socket; anyone else does not.
        postfix = pwd.getpwnam("postfix")
        asked = ask_as(postfix.pw_uid, postfix.pw_gid, str(path), "192.0.2.63")
        assert asked.returncode == 0 and asked.stdout.strip() == "OK OK", asked.stderr
        other = ask_as(4242, 4242, str(path), "192.0.2.63")
        assert other.returncode != 0 and "Permission denied" in other.stderr, other.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
    assert code == 0, err.read_text()
    assert not path.exists() and directory.is_dir()  # stopped: nobody answers


def test_without_setgid_the_start_fails_saying_how_to_fix_it(pf_tmp):
    """0750 alone: the service user, not in group postfix, cannot give the socket that group."""
    directory = made_by_tmpfiles(pf_tmp)
    directory.chmod(0o750)
    path = directory / "socketmap"
    proc = start_as_service_user(pf_tmp, f"socketmap:unix:{path}:popbsmtp")
    code = proc.wait(30)
    text = (pf_tmp / "daemon.err").read_text()
    assert code == 78, text
    assert f"cannot give the socket {path} group postfix" in text, text
    assert f"chmod 2750 {directory}" in text
    assert not os.path.lexists(path)  # no socket smtpd could not use is left behind
