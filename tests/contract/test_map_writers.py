"""The same scenarios for every table writer, checked with Postfix's own ``postmap -q``.

Writers: the rebuild backend for hash, btree, cdb and lmdb, and the direct
lmdb writer.  A reader process runs ``postmap -q`` in a tight loop while the
table is rebuilt 200 times; it must never see an error or a wrong answer.
"""

from __future__ import annotations

import grp
import os
import stat
import subprocess
from pathlib import Path
from typing import List

import pytest
from postfix_instance import postfix_tool, postmap_query, require
from support import postfix_dir

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
    opened = open_writer(MapSpec(kind, str(pf_tmp / "pbs")), "OK", _options(), method)
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


def test_empty_withdraws_every_key_and_keeps_the_file(writer):
    """What a stopping daemon does: Postfix finds no key, and no missing table (451)."""
    writer.replace([STABLE, TOGGLED])
    writer.apply(["192.0.2.3"], [])  # a deferred rebuild is dropped, not written first
    on_file = 3 if writer.pending() is None else 2
    assert writer.empty() == on_file  # how many keys Postfix could still find
    for name in writer.files:
        assert stat.S_ISREG(os.lstat(name).st_mode)
    for key in (STABLE, TOGGLED, "192.0.2.3"):
        assert postmap_query(key, table(writer)) is None
    assert writer.keys() == set() and writer.pending() is None
    assert writer.empty() == 0
    writer.replace([STABLE])  # the next start reconciles as usual
    assert postmap_query(STABLE, table(writer)) == "OK"


def test_reopen_keeps_contents(writer):
    writer.replace([STABLE, TOGGLED])
    writer.close()
    again = open_writer(writer.spec, "OK", _options(), _method(writer))
    try:
        assert again.keys() == {STABLE, TOGGLED}
        again.apply([], [TOGGLED])
        again.flush()
        assert postmap_query(TOGGLED, table(again)) is None
        assert again.healthy()
    finally:
        again.close()


# A separate process, so the lookups really run concurrently with the rebuilds.
READER = f"""
while [ ! -e "$1/stop" ]; do
    "$2" -c "$4" -q {STABLE} "$3" >/dev/null 2>>"$1/errors"; echo "stable $?"
    "$2" -c "$4" -q {NEVER} "$3" >/dev/null 2>>"$1/errors"; echo "never $?"
done
"""


def test_replace_and_differs_take_the_grant_tables_live_view(writer):
    """The reconcile path: exactly the grants, stale keys gone, a changed value rewritten."""
    writer.replace(["192.0.2.1", "192.0.2.2"])
    grants = {"192.0.2.2": 1.0, "2001:db8::3": 2.0}
    view = grants.keys()
    assert writer.differs(view)
    writer.replace(view)
    writer.flush()
    assert not writer.differs(view)
    assert writer.keys() == set(view)
    assert postmap_query("192.0.2.1", table(writer)) is None
    assert postmap_query("2001:db8::3", table(writer)) == "OK"
    writer.replace(["192.0.2.4", "2001:db8::3"])  # same count, another key
    assert writer.differs(view)
    writer.close()
    again = open_writer(writer.spec, "PERMIT", _options(), _method(writer))
    try:
        again.replace(view)
        again.flush()
        assert not again.differs(view)
        assert postmap_query("192.0.2.2", table(again)) == "PERMIT"
        assert postmap_query("2001:db8::3", table(again)) == "PERMIT"
        assert postmap_query("192.0.2.4", table(again)) is None
    finally:
        again.close()


def test_reader_never_sees_error_or_wrong_answer(writer, pf_tmp):
    writer.replace([STABLE])
    work = pf_tmp / "reader"
    work.mkdir()
    answers = work / "answers"
    with open(answers, "w") as out:
        reader = subprocess.Popen(
            [
                "sh",
                "-c",
                READER,
                "reader",
                str(work),
                require("postmap"),
                table(writer),
                postfix_dir(),
            ],
            stdout=out,
        )
    try:
        rounds = 0
        # 200 rebuilds, and more until the reader has looked up often enough to prove something.
        while rounds < 200 or len(answers.read_text().splitlines()) < 100:
            keys = [STABLE] + [f"10.0.{rounds % 250}.{i}" for i in range(rounds % 7)]
            writer.replace(keys)
            rounds += 1
    finally:
        (work / "stop").touch()
        reader.wait(30)
    lines = answers.read_text().splitlines()
    wrong = [x for x in lines if x not in ("stable 0", "never 1")]
    assert wrong == [] and (work / "errors").read_text() == ""
    assert len(lines) >= 100
    assert postmap_query(STABLE, table(writer)) == "OK"


def test_refuses_a_symlinked_table(pf_tmp):
    target = pf_tmp / "elsewhere.db"
    target.write_bytes(b"")
    (pf_tmp / "pbs.db").symlink_to(target)
    with pytest.raises(Exception, match="symbolic link"):
        open_writer(MapSpec("hash", str(pf_tmp / "pbs")), "OK", _options(), method="rebuild")


def test_rebuilds_are_coalesced_and_flushed(pf_tmp):
    writer = open_writer(MapSpec("hash", str(pf_tmp / "pbs")), "OK", _options())
    try:
        assert isinstance(writer, rebuild_module.Writer)
        writer.replace([])
        inode = os.lstat(pf_tmp / "pbs.db").st_ino
        writer.apply(["192.0.2.10"], [])  # right after a rebuild: deferred
        due = writer.pending()
        assert due is not None and due > 0
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
        writer_class("dbm" if "dbm" not in _postconf_m() else "nosuchtype", "auto", postfix_dir())
    message = str(caught.value)
    assert "not supported" in message and "postconf -m" in message and "hash" in message


def test_no_direct_writer_for_hash():
    with pytest.raises(ConfigError, match="no direct writer"):
        writer_class("hash", "direct", postfix_dir())


def _options() -> MapOptions:
    """Defaults, with postmap/postconf asked about the tests' own Postfix config dir."""
    return MapOptions(postfix_dir=postfix_dir())


def _method(writer: MapWriter) -> str:
    return "rebuild" if isinstance(writer, rebuild_module.Writer) else "direct"


def _postconf_m() -> List[str]:
    out = subprocess.run([*postfix_tool("postconf"), "-m"], capture_output=True, text=True)
    return out.stdout.split()


def test_owner_and_group_applied(pf_tmp):
    options = MapOptions(0o640, "root", "postfix", postfix_dir())
    writer = open_writer(MapSpec("cdb", str(pf_tmp / "pbs")), "OK", options)
    try:
        writer.replace([STABLE])
        info = os.lstat(Path(pf_tmp / "pbs.cdb"))
        assert stat.S_IMODE(info.st_mode) == 0o640
        assert info.st_gid == grp.getgrnam("postfix").gr_gid
        assert postmap_query(STABLE, f"cdb:{pf_tmp}/pbs") == "OK"
    finally:
        writer.close()
