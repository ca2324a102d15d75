"""Smaller file defences: our own log's mode under umask 000, secrets never quoted,
unknown table types refused by ``check-config``.  Real daemon, real CLI."""

from __future__ import annotations

import os
import stat

from reliability_support import LimitedDaemon
from support import popbsmtp, wait_for, write_config

SECRET = "root:$6$s3cr3tSALT$hashhashhash:19700:0:99999:7:::"


def test_own_log_file_is_0640_under_umask_000_and_never_followed(pf_tmp):
    own = pf_tmp / "popbsmtp.log"
    daemon = LimitedDaemon(write_config(pf_tmp, log_target=own), umask=0).start(ready=False)
    try:
        assert daemon.proc is not None
        wait_for(lambda: own.exists() and "following" in own.read_text(), timeout=15)
        mode = stat.S_IMODE(os.lstat(own).st_mode)
        assert mode == 0o640, f"{own} is mode {mode:04o}"
        assert daemon.stop() == 0
    finally:
        if daemon.alive():
            daemon.stop()


def test_a_network_file_is_never_quoted_in_an_error(pf_tmp):
    shadow = pf_tmp / "shadow"
    shadow.write_text(f"# a comment\n{SECRET}\n")
    shadow.chmod(0o600)
    config = write_config(pf_tmp, ignore_networks=shadow)
    result = popbsmtp("check-config", "-c", str(config), check=False)
    assert result.returncode != 0
    assert f"network list {shadow}:2: not a network" in result.stderr
    assert "s3cr3t" not in result.stderr and "root:" not in result.stderr
    binary = pf_tmp / "binary"
    binary.write_bytes(b"\xff\xfe" + SECRET.encode())
    config = write_config(pf_tmp, ignore_networks=binary)
    result = popbsmtp("check-config", "-c", str(config), check=False)
    assert result.returncode != 0
    assert f"network list {binary} is not UTF-8 text" in result.stderr
    assert "s3cr3t" not in result.stderr and "Traceback" not in result.stderr


def test_unknown_table_type_fails_check_config_listing_the_known(pf_tmp):
    config = write_config(pf_tmp, map="foo:/tmp/x")
    result = popbsmtp("check-config", "-c", str(config), check=False)
    assert result.returncode == 78, result.stdout
    assert "map: table type 'foo' is not supported; supported: " in result.stderr
    assert "lmdb" in result.stderr and "hash" in result.stderr
