"""Resource faults hit the real daemon; it says what and where, keeps tailing,
retries, and catches up when the fault clears.  It never exits on them.

Permission faults run the daemon without root's file powers (``setpriv``
drops CAP_DAC_OVERRIDE etc.), "disk full" is ``RLIMIT_FSIZE`` on the daemon,
raised again with ``prlimit`` once the test has seen the failure.
"""

from __future__ import annotations

import json
import os
import re

import pytest
from reliability_support import LimitedDaemon, fresh_ip, map_keys
from support import Daemon, append, dovecot_login, popbsmtp, wait_for, write_config


def in_map(tmp, ip, table="pbs") -> bool:
    return ip in map_keys(f"lmdb:{tmp}/{table}")


def failures(daemon) -> list:
    """When the daemon logged a failed table write (seconds of the day)."""
    stamps = re.findall(r" (\d\d):(\d\d):(\d\d),(\d{3}) .*ERROR: .*\(retrying\)", daemon.log())
    return [int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000 for h, m, s, ms in stamps]


def test_map_directory_not_writable(pf_tmp):
    maps = pf_tmp / "maps"
    maps.mkdir(mode=0o755)
    config = write_config(pf_tmp, map=f"lmdb:{maps}/pbs")
    log = pf_tmp / "mail.log"
    append(log, dovecot_login("192.0.2.1"))
    daemon = LimitedDaemon(config, unprivileged=True).start()
    try:
        wait_for(lambda: in_map(pf_tmp, "192.0.2.1", "maps/pbs"), what="first grant")
        maps.chmod(0o555)
        os.unlink(maps / "pbs.lmdb")  # the table must be re-created, and cannot be
        append(log, dovecot_login("192.0.2.2"))
        daemon.wait_log("granted 192.0.2.2")  # tailing goes on during the fault
        wait_for(lambda: len(failures(daemon)) >= 3, 15, what="three attempts")
        text = daemon.log()
        assert re.search(rf"{maps}/\S*: .*Permission denied.*\(retrying\)", text), text
        first, second, third = failures(daemon)[:3]
        assert 0.9 < second - first < 1.5 and 1.9 < third - second < 2.5, "no backoff"
        assert daemon.alive()
        maps.chmod(0o755)
        wait_for(lambda: (maps / "pbs.lmdb").exists(), 20, what="table re-created")
        wait_for(lambda: {"192.0.2.1", "192.0.2.2"} <= map_keys(f"lmdb:{maps}/pbs"), 5)
        daemon.wait_log("is written again")
        assert daemon.stop() == 0
    finally:
        maps.chmod(0o755)
        if daemon.alive():
            daemon.stop()


def test_disk_full_then_space_again(pf_tmp):
    config = write_config(pf_tmp, grace="1h", log_level="warning")
    log = pf_tmp / "mail.log"
    log.touch()
    daemon = LimitedDaemon(config, fsize=128 << 10).start(ready=False)  # warnings only
    try:
        wait_for(lambda: (pf_tmp / "state" / "state.json").exists(), 15, what="daemon ready")
        ips = [fresh_ip(n) for n in range(6000)]
        append(log, "".join(dovecot_login(ip) for ip in ips))
        daemon.wait_log("File too large")
        text = daemon.log()
        assert re.search(r"cannot save state to \S*state\.json: .*File too large", text), text
        assert re.search(r"\S*pbs\.lmdb\S* failed: .*\(retrying\)", text), text
        append(log, dovecot_login("192.0.2.77"))  # still tailing while the disk is full
        assert daemon.alive()
        daemon.set_fsize(-1)  # RLIM_INFINITY: space again
        wait_for(
            lambda: map_keys(f"lmdb:{pf_tmp}/pbs") == {*ips, "192.0.2.77"},
            30,
            0.2,
            "map caught up after the disk-full fault",
        )
        listed = popbsmtp("list", "--json", "--config", str(config)).stdout
        assert {json.loads(row)["ip"] for row in listed.splitlines()} == {*ips, "192.0.2.77"}
        assert daemon.stop() == 0
    finally:
        if daemon.alive():
            daemon.stop()


def test_log_unreadable_after_rotation(pf_tmp):
    log = pf_tmp / "mail.log"
    append(log, dovecot_login("192.0.2.10"))
    daemon = LimitedDaemon(write_config(pf_tmp), unprivileged=True).start()
    try:
        wait_for(lambda: in_map(pf_tmp, "192.0.2.10"), what="first grant")
        os.rename(log, f"{log}.1")
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o000)  # a bad "create" mode
        os.write(fd, dovecot_login("192.0.2.11").encode())
        os.close(fd)
        append(pf_tmp / "mail.log.1", dovecot_login("192.0.2.12"))  # syslog not HUP'ed yet
        daemon.wait_log(f"cannot open {log}: Permission denied")
        wait_for(lambda: in_map(pf_tmp, "192.0.2.12"), what="old file still drained")
        assert daemon.alive() and not in_map(pf_tmp, "192.0.2.11")
        log.chmod(0o640)
        wait_for(lambda: in_map(pf_tmp, "192.0.2.11"), 10, what="caught up once readable")
        assert daemon.stop() == 0
    finally:
        if daemon.alive():
            daemon.stop()


def test_log_removed_then_recreated(pf_tmp):
    log = pf_tmp / "mail.log"
    config = write_config(pf_tmp)
    append(log, dovecot_login("192.0.2.20"))
    with Daemon(config) as daemon:
        wait_for(lambda: in_map(pf_tmp, "192.0.2.20"), what="first grant")
        os.unlink(log)
        append(log, dovecot_login("192.0.2.21"))
        wait_for(lambda: in_map(pf_tmp, "192.0.2.21"), what="login in the re-created log")
        assert daemon.stop() == 0
    os.unlink(log)
    with Daemon(config) as daemon:  # started while the log is missing
        daemon.wait_log(f"waiting for {log} to appear")
        append(log, dovecot_login("192.0.2.22"))
        daemon.wait_log(f"{log} appeared")
        wait_for(lambda: in_map(pf_tmp, "192.0.2.22"), what="login once the log appeared")
        assert daemon.stop() == 0


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path):
    path.write_bytes(b"\x00\xff not json at all \xfe")


def _bad_address(path):
    data = json.loads(path.read_text())
    data["grants"].append(["unknown", 4e9, "dovecot", "login"])
    path.write_text(json.dumps(data))


def _symlink(path):
    target = path.with_name("elsewhere.json")
    os.rename(path, target)
    os.symlink(target, path)


@pytest.mark.parametrize(
    "damage",
    [_truncate, _garbage, _bad_address, _symlink],
    ids=["truncated", "garbage", "unknown-key", "symlink"],
)
def test_corrupt_state_is_set_aside_and_rebuilt_from_the_log(pf_tmp, damage):
    log = pf_tmp / "mail.log"
    config = write_config(pf_tmp, grace="1h")
    append(log, dovecot_login("192.0.2.30"))
    with Daemon(config) as daemon:
        wait_for(lambda: in_map(pf_tmp, "192.0.2.30"), what="first grant")
        popbsmtp("add", "192.0.2.31", "--config", str(config))
        assert daemon.stop() == 0
    state = pf_tmp / "state" / "state.json"
    damage(state)
    with Daemon(config) as daemon:
        daemon.wait_log("set aside as")
        assert re.search(rf"state file {state} is unreadable \(.+\); set aside as", daemon.log())
        assert list(state.parent.glob("state.json.corrupt-*")), "corrupt file not kept"
        # Rebuilt from what the log still says; the hand-made grant is gone with the state.
        wait_for(lambda: map_keys(f"lmdb:{pf_tmp}/pbs") == {"192.0.2.30"}, what="rebuilt")
        assert daemon.stop() == 0
    assert "unknown" not in map_keys(f"lmdb:{pf_tmp}/pbs")
