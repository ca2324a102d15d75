"""File-system defences: no symlinks followed, nothing others can write, no
injected control requests, a bounded warning stream when the table is full.

Start-up refusals are checked on the real daemon: it must exit non-zero with
a message that names the path and says how to fix it.
"""

from __future__ import annotations

import json
import logging
import os
import stat

from reliability_support import LimitedDaemon, map_keys
from support import Daemon, append, dovecot_login, wait_for, write_config

from popbsmtp.grants import GrantTable, control


def refused(config) -> str:
    daemon = Daemon(config).start(ready=False)
    assert daemon.proc is not None
    code = daemon.proc.wait(30)
    daemon._err.close()
    assert code == 78, daemon.log()  # EX_CONFIG: systemd does not retry it
    return daemon.log()


def test_state_dir_writable_by_others_is_refused(pf_tmp):
    (pf_tmp / "state").mkdir()
    (pf_tmp / "state").chmod(0o777)
    text = refused(write_config(pf_tmp))
    assert f"state_dir {pf_tmp}/state is writable by others" in text
    assert f"chmod go-w {pf_tmp}/state" in text


def test_map_directory_writable_by_others_is_refused(pf_tmp):
    shared = pf_tmp / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # even sticky: others could plant pbs.lmdb before we create it
    text = refused(write_config(pf_tmp, map=f"lmdb:{shared}/pbs"))
    assert f"table directory {shared} is writable by others" in text
    assert f"chmod go-w {shared}" in text
    assert not (shared / "pbs.lmdb").exists()


def test_symlinked_table_is_refused(pf_tmp):
    target = pf_tmp / "victim"
    target.write_text("precious\n")
    os.symlink(target, pf_tmp / "pbs.lmdb")
    text = refused(write_config(pf_tmp))
    assert f"{pf_tmp}/pbs.lmdb is a symbolic link" in text
    assert target.read_text() == "precious\n"


def test_open_control_spool_is_refused(pf_tmp):
    spool = pf_tmp / "state" / "control"
    spool.mkdir(parents=True)
    (pf_tmp / "state").chmod(0o750)
    spool.chmod(0o755)
    text = refused(write_config(pf_tmp))
    assert f"control spool {spool} must be owned by uid" in text
    assert "chmod 0700" in text


def test_request_owned_by_another_user_is_rejected(pf_tmp):
    config = write_config(pf_tmp)
    with Daemon(config) as daemon:
        spool = pf_tmp / "state" / "control"
        assert stat.S_IMODE(spool.stat().st_mode) == 0o700
        forged = spool / ".forged"
        forged.write_text(json.dumps({"op": "add", "ip": "192.0.2.66"}))
        os.chown(forged, 65534, 65534)  # as if a local user got a file in there
        os.rename(forged, spool / "req-00000000000000000001-1.json")
        daemon.wait_log("owned by uid 65534")
        append(pf_tmp / "mail.log", dovecot_login("192.0.2.67"))
        wait_for(lambda: "192.0.2.67" in map_keys(f"lmdb:{pf_tmp}/pbs"), what="a real login")
        assert "192.0.2.66" not in map_keys(f"lmdb:{pf_tmp}/pbs")
        assert not list(spool.glob("req-*")), "rejected request left in the spool"
        assert daemon.stop() == 0


def test_nothing_created_group_or_world_writable_even_with_umask_0(pf_tmp):
    config = write_config(pf_tmp)
    append(pf_tmp / "mail.log", dovecot_login("192.0.2.5"))
    daemon = LimitedDaemon(config, umask=0).start()
    try:
        wait_for(lambda: "192.0.2.5" in map_keys(f"lmdb:{pf_tmp}/pbs"), what="granted")
        created = [pf_tmp / "pbs.lmdb", *(pf_tmp / "state").rglob("*"), pf_tmp / "state"]
        assert len(created) >= 4
        for path in created:
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            assert not mode & 0o022, f"{path} is mode {mode:04o}"
            assert not stat.S_ISLNK(os.lstat(path).st_mode)
        assert daemon.stop() == 0
    finally:
        if daemon.alive():
            daemon.stop()


def test_full_table_warnings_are_rate_limited(caplog):
    table = GrantTable(max_entries=10)
    with caplog.at_level(logging.WARNING, logger="popbsmtp.grants"):
        for n in range(100_010):
            table.grant(f"10.{n >> 16}.{n >> 8 & 255}.{n & 255}", 1e10, "p", "r")
    assert len(table) == 10 and table.refused_full == 100_000
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 6, messages  # 1st, 10th, 100th, ... 100000th refusal
    assert "grant table full (10 entries)" in messages[0]
    assert "100000 logins refused" in messages[-1]
    table.remove("10.0.0.0")
    table.grant("10.9.9.9", 1e10, "p", "r")  # room again: the next full spell logs anew
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="popbsmtp.grants"):
        table.grant("10.9.9.10", 1e10, "p", "r")
    assert len(caplog.records) == 1


BAD_REQUESTS = [
    "[1, 2]",
    '"add"',
    '{"op": "add", "ip": "unknown"}',
    '{"op": "add", "ip": "10.0.0.0/8"}',
    '{"op": "add", "ip": "10.0"}',
    '{"op": "add", "ip": "::FFFF:10.0.0.1"}',
    '{"op": "add", "ip": "10.0.0.1", "grace": NaN}',
    '{"op": "add", "ip": "10.0.0.1", "grace": Infinity}',
    '{"op": "add", "ip": "10.0.0.1", "grace": "1h"}',
    '{"op": "grant-all"}',
    "{",
]


def test_malformed_requests_are_set_aside_not_applied(tmp_path, caplog):
    spool = tmp_path / "control"
    spool.mkdir(mode=0o700)
    for n, text in enumerate(BAD_REQUESTS):
        (spool / f"req-{n:020d}-1.json").write_text(text)
    (spool / f"req-{len(BAD_REQUESTS):020d}-1.json").write_text('{"op": "add", "ip": "10.0.0.1"}')
    with caplog.at_level(logging.WARNING, logger="popbsmtp.grants.control"):
        found = control.pending(str(tmp_path))
    assert [request for _, request in found] == [{"op": "add", "ip": "10.0.0.1"}]
    assert len(caplog.records) == len(BAD_REQUESTS)
    assert all("setting aside bad control request" in r.getMessage() for r in caplog.records)
    good = f"req-{len(BAD_REQUESTS):020d}-1.json"
    assert sorted(p.name for p in spool.glob("req-*")) == [good]
    assert len(list(spool.glob("bad-req-*"))) == len(BAD_REQUESTS)  # kept to look at
    assert control.pending(str(tmp_path))[0][0].endswith(good)  # never retried


def test_start_refuses_a_table_directory_it_cannot_write(pf_tmp):
    maps = pf_tmp / "readonly"
    maps.mkdir(mode=0o555)
    config = write_config(pf_tmp, map=f"lmdb:{maps}/pbs")
    daemon = LimitedDaemon(config, unprivileged=True).start(ready=False)
    try:
        code = daemon.proc.wait(30)
    finally:
        maps.chmod(0o755)
    assert code == 78
    assert f"cannot create files in the table directory {maps}: Permission denied" in daemon.log()
    assert "lmdb:/etc/postfix/popbsmtp/clients" in daemon.log()
