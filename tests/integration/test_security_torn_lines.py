"""A line cut by rotation never grants: the real daemon, real files, real ``postmap -q``.

A writer's last line may be unterminated when logrotate copies and
truncates the log, or renames it.  Read as a complete line it names a
shorter address (``192.0.2.1`` of ``192.0.2.123``), so the daemon must drop
it, whether it held the partial line itself or found it in the copy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from postfix_instance import postmap_query
from support import Daemon, append, append_bytes, dovecot_login, rfc3339, wait_for, write_config

DROPPED = "dropped the unterminated last line"


def _config(pf_tmp: Path) -> Path:
    return write_config(pf_tmp, profiles="dovecot, vm-pop3d, spop3d", grace="10m")


def _granted(pf_tmp: Path, ip: str) -> bool:
    return postmap_query(ip, f"lmdb:{pf_tmp}/pbs") is not None


def _wait_granted(pf_tmp: Path, ip: str) -> None:
    wait_for(lambda: _granted(pf_tmp, ip), timeout=15, what=f"{ip} in the map")


def _holds(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open."""
    fds = f"/proc/{pid}/fd"
    found = []
    for fd in os.listdir(fds):
        try:
            found.append(os.readlink(f"{fds}/{fd}"))
        except OSError:
            continue  # closed meanwhile
    return str(path) in found


def test_copytruncate_cut_vm_pop3d_line_grants_nothing(pf_tmp):
    log = pf_tmp / "mail.log"
    append(log, dovecot_login("192.0.2.10"))
    with Daemon(_config(pf_tmp)) as daemon:
        _wait_granted(pf_tmp, "192.0.2.10")  # the daemon stands past the first line
        line = f"{rfc3339()} mail vm-pop3d[3]: User 'bob' logged in from 192.0.2.1"
        append_bytes(log, line.encode())  # the client is 192.0.2.123: "23" is not written yet
        shutil.copyfile(log, pf_tmp / "mail.log.1")  # logrotate copytruncate
        os.truncate(log, 0)
        append_bytes(log, b"23\n")  # the writer goes on in the truncated file
        append(log, dovecot_login("192.0.2.11"))
        _wait_granted(pf_tmp, "192.0.2.11")  # the copy, then the live file, were read
        assert not _granted(pf_tmp, "192.0.2.1"), "a cut line granted a shorter address"
        assert not _granted(pf_tmp, "192.0.2.123")
        assert DROPPED in daemon.log()  # and counted
        assert daemon.stop() == 0


def test_rename_cut_spop3d_line_grants_nothing_when_its_end_comes_later(pf_tmp):
    log = pf_tmp / "mail.log"
    append(log, dovecot_login("192.0.2.20"))
    with Daemon(_config(pf_tmp)) as daemon:
        _wait_granted(pf_tmp, "192.0.2.20")
        line = f"{rfc3339()} mail spop3d[5]: user alice authenticated - 198.51.100.2"
        append_bytes(log, line.encode())  # 198.51.100.254, cut before "54"
        rotated = pf_tmp / "mail.log.1"
        os.rename(log, rotated)  # logrotate's rename, then create
        append(log, dovecot_login("192.0.2.21"))
        _wait_granted(pf_tmp, "192.0.2.21")
        # The old file is finished (closed) a moment after the new one has
        # data; the rest of the line arrives in the new file only after that.
        assert daemon.proc is not None
        wait_for(lambda: not _holds(daemon.proc.pid, rotated), timeout=15, what="old file done")
        append_bytes(log, b"54\n")
        append(log, dovecot_login("192.0.2.22"))
        _wait_granted(pf_tmp, "192.0.2.22")
        assert not _granted(pf_tmp, "198.51.100.2"), "a cut line granted a shorter address"
        assert not _granted(pf_tmp, "198.51.100.254")
        assert DROPPED in daemon.log()
        assert daemon.stop() == 0
