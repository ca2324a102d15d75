"""The same scenarios for every table writer, checked with Postfix's own ``postmap -q``.

Writers: the rebuild backend for hash, btree, cdb and lmdb, and the direct
lmdb writer.  A reader process runs ``postmap -q`` in a tight loop while the
table is rebuilt 200 times; it must never see an error or a wrong answer.
"""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from pathlib import Path
from typing import List

import pytest
from postfix_instance import postmap_query, require

from popbsmtp.errors import ConfigError
from popbsmtp.maps import MapOptions, MapSpec, MapWriter, open_writer, writer_class
from popbsmtp.maps import rebuild as rebuild_module

WRITERS = [
    ("hash", "rebuild"),
    ("btree", "rebuild"),
    ("cdb", "rebuild"),
    ("lmdb", "rebuild"),
    ("lmdb", "direct"),
]
IDS = [f"{kind}-{method}" for kind, method in WRITERS]
STABLE = "192.0.2.1"
TOGGLED = "2001:db8::7"
NEVER = "198.51.100.99"


@pytest.fixture(params=WRITERS, ids=IDS)
def writer(request, pf_tmp):
    kind, method = request.param
    opened = open_writer(MapSpec(kind, str(pf_tmp / "pbs")), "OK", MapOptions(), method)
    yield opened
    opened.close()


def table(writer: MapWriter) -> str:
    return str(writer.spec)


def test_new_table_exists_empty_and_readable(writer):
    for name in writer.files:
        info = os.lstat(name)
        assert stat.S_ISREG(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o644
    assert writer.keys() == set()
    assert postmap_query(STABLE, table(writer)) is None


def test_granted_found_removed_not(writer):
    writer.replace([STABLE])
    writer.apply(["192.0.2.2", "2001:DB8::5"], [])
    writer.flush()
    assert postmap_query("192.0.2.2", table(writer)) == "OK"
    assert postmap_query("2001:db8::5", table(writer)) == "OK"
    writer.apply([], ["192.0.2.2"])
    writer.flush()
    assert postmap_query("192.0.2.2", table(writer)) is None
    assert postmap_query(STABLE, table(writer)) == "OK"
    assert writer.keys() == {STABLE, "2001:db8::5"}
    assert writer.pending() is None


def test_reopen_keeps_contents(writer):
    writer.replace([STABLE, TOGGLED])
    writer.close()
    again = open_writer(writer.spec, "OK", MapOptions(), _method(writer))
    try:
        assert again.keys() == {STABLE, TOGGLED}
        again.apply([], [TOGGLED])
        again.flush()
        assert postmap_query(TOGGLED, table(again)) is None
        assert again.healthy()
    finally:
        again.close()


def test_reader_never_sees_error_or_wrong_answer(writer):
    writer.replace([STABLE])
    postmap = require("postmap")
    stop = threading.Event()
    problems: List[str] = []
    lookups = [0]

    def reader() -> None:
        while not stop.is_set():
            for key, want in ((STABLE, 0), (NEVER, 1)):
                done = subprocess.run(
                    [postmap, "-q", key, table(writer)], capture_output=True, text=True
                )
                lookups[0] += 1
                if done.returncode != want or done.stderr:
                    problems.append(f"{key}: rc={done.returncode} {done.stderr.strip()}")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for round_ in range(200):
            keys = [STABLE] + [f"10.0.{round_}.{i}" for i in range(round_ % 7)]
            writer.replace(keys)
    finally:
        stop.set()
        thread.join()
    assert problems == []
    assert lookups[0] > 20, "the reader barely ran; the test proved nothing"
    assert postmap_query(STABLE, table(writer)) == "OK"
    assert postmap_query("10.0.199.3", table(writer)) == "OK"


def test_refuses_a_symlinked_table(pf_tmp):
    target = pf_tmp / "elsewhere.db"
    target.write_bytes(b"")
    (pf_tmp / "pbs.db").symlink_to(target)
    with pytest.raises(Exception, match="symbolic link"):
        open_writer(MapSpec("hash", str(pf_tmp / "pbs")), "OK", method="rebuild")


def test_rebuilds_are_coalesced_and_flushed(pf_tmp):
    writer = open_writer(MapSpec("hash", str(pf_tmp / "pbs")), "OK")
    try:
        assert isinstance(writer, rebuild_module.Writer)
        writer.replace([])
        inode = os.lstat(pf_tmp / "pbs.db").st_ino
        writer.apply(["192.0.2.10"], [])  # right after a rebuild: deferred
        due = writer.pending()
        assert due is not None and 0 < due <= rebuild_module.MIN_INTERVAL
        assert os.lstat(pf_tmp / "pbs.db").st_ino == inode
        assert postmap_query("192.0.2.10", table(writer)) is None
        writer.apply(["192.0.2.11"], [])
        writer.close()  # a deferred rebuild is written on the way out
        assert postmap_query("192.0.2.10", table(writer)) == "OK"
        assert postmap_query("192.0.2.11", table(writer)) == "OK"
        assert os.lstat(pf_tmp / "pbs.db").st_ino != inode  # renamed in, never rewritten
        assert [p.name for p in pf_tmp.iterdir() if p.name.startswith(".popbsmtp")] == []
    finally:
        writer.close()


def test_unsupported_type_names_postfix_types():
    with pytest.raises(ConfigError) as caught:
        writer_class("dbm" if "dbm" not in _postconf_m() else "nosuchtype")
    message = str(caught.value)
    assert "not supported" in message and "postconf -m" in message and "hash" in message


def test_no_direct_writer_for_hash():
    with pytest.raises(ConfigError, match="no direct writer"):
        writer_class("hash", "direct")


def _method(writer: MapWriter) -> str:
    return "rebuild" if isinstance(writer, rebuild_module.Writer) else "direct"


def _postconf_m() -> List[str]:
    out = subprocess.run([require("postconf"), "-m"], capture_output=True, text=True)
    return out.stdout.split()


def test_owner_and_group_applied(pf_tmp):
    options = MapOptions(0o640, "root", "postfix")
    writer = open_writer(MapSpec("cdb", str(pf_tmp / "pbs")), "OK", options)
    try:
        writer.replace([STABLE])
        info = os.lstat(Path(pf_tmp / "pbs.cdb"))
        assert stat.S_IMODE(info.st_mode) == 0o640
        import grp

        assert info.st_gid == grp.getgrnam("postfix").gr_gid
        assert postmap_query(STABLE, f"cdb:{pf_tmp}/pbs") == "OK"
    finally:
        writer.close()
