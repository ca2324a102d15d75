"""Directories and files another user owns are refused, with the reason.

Mode bits are not enough: the owner of the state directory can write a
``state.json`` that the root daemon loads, and the owner of the table
directory can swap in a table of their own.  The real daemon must refuse to
start, ``doctor`` must say so, and ``postmap -q`` must not find the
attacker's address in the daemon's table.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from postfix_instance import postfix_tool, postmap_query
from support import Daemon, popbsmtp, write_config

NOBODY = 65534  # any uid that is neither root nor the daemon's


def _refused(config: Path) -> str:
    daemon = Daemon(config).start(ready=False)
    assert daemon.proc is not None
    code = daemon.proc.wait(30)
    daemon._err.close()
    assert code != 0, daemon.log()
    return daemon.log()


def _empty_table(table: str, source: Path) -> None:
    source.write_text("")
    subprocess.run([*postfix_tool("postmap"), table], check=True, timeout=30)


def test_state_dir_owned_by_another_user_is_not_loaded(pf_tmp):
    table = f"lmdb:{pf_tmp}/pbs"
    _empty_table(table, pf_tmp / "pbs")
    state = pf_tmp / "state"
    state.mkdir(mode=0o750)
    planted = {"version": 1, "saved": 0, "position": None, "grants": []}
    planted["grants"] = [["6.6.6.6", 4e9, "manual", "add"]]  # until 2096
    (state / "state.json").write_text(json.dumps(planted))
    os.chown(state / "state.json", NOBODY, NOBODY)
    os.chown(state, NOBODY, NOBODY)  # mode 0750: only the mode bits looked safe
    text = _refused(write_config(pf_tmp, map=table))
    assert f"state_dir {state}: it is owned by uid {NOBODY}" in text
    assert f"chown root {state}" in text
    assert postmap_query("6.6.6.6", table) is None


def test_state_file_owned_by_another_user_is_set_aside(pf_tmp):
    table = f"lmdb:{pf_tmp}/pbs"
    state = pf_tmp / "state"
    state.mkdir(mode=0o750)
    planted = {"version": 1, "saved": 0, "position": None, "grants": []}
    planted["grants"] = [["6.6.6.6", 4e9, "manual", "add"]]
    (state / "state.json").write_text(json.dumps(planted))
    os.chown(state / "state.json", NOBODY, NOBODY)  # e.g. chowned by a careless script
    with Daemon(write_config(pf_tmp, map=table)) as daemon:
        assert "not root or the daemon's user" in daemon.log()
        assert postmap_query("6.6.6.6", table) is None
        assert daemon.stop() == 0
    assert list(state.glob("state.json.corrupt-*"))


def test_map_directory_owned_by_another_user_is_refused_and_doctor_says_so(pf_tmp):
    maps = pf_tmp / "maps"
    maps.mkdir(mode=0o755)
    table = f"lmdb:{maps}/clients"
    _empty_table(table, maps / "clients")
    os.chown(maps, NOBODY, NOBODY)  # they can swap in their own clients.lmdb at any time
    config = write_config(pf_tmp, map=table)
    text = _refused(config)
    assert f"table directory {maps}: it is owned by uid {NOBODY}" in text
    result = popbsmtp("doctor", "--config", str(config), check=False)
    found = [line for line in result.stdout.splitlines() if "map directory" in line]
    assert found and found[0].startswith("ERROR"), result.stdout
    assert f"owned by uid {NOBODY}" in found[0]
    assert result.returncode != 0


def test_directory_above_the_map_owned_by_another_user_is_refused(pf_tmp):
    above = pf_tmp / "home"
    maps = above / "maps"
    maps.mkdir(parents=True, mode=0o755)
    os.chown(above, NOBODY, NOBODY)  # could rename maps/ away and put its own in place
    text = _refused(write_config(pf_tmp, map=f"lmdb:{maps}/clients"))
    assert f"{above}, above or behind it, is owned by uid {NOBODY}" in text


def test_log_target_owned_by_another_user_or_a_symlink_is_refused(pf_tmp):
    victim = pf_tmp / "victim"
    victim.write_text("precious\n")
    own = pf_tmp / "popbsmtp.log"
    os.symlink(victim, own)
    text = _refused(write_config(pf_tmp, log_target=own))
    assert f"cannot open log file {own}: it is a symbolic link" in text
    assert victim.read_text() == "precious\n"
    os.unlink(own)
    own.write_text("")
    os.chown(own, NOBODY, NOBODY)
    text = _refused(write_config(pf_tmp, log_target=own))
    assert f"cannot open log file {own}: owned by uid {NOBODY}" in text
