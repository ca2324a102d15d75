"""Settings: a frozen typed dataclass whose fields are exactly the schema's options."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from support import wait_for, write_config

from popbsmtp import config
from popbsmtp.config import SCHEMA, Settings
from popbsmtp.doctor.probes import lock_holder
from popbsmtp.grants.state import StateLock


def test_fields_are_exactly_the_schema_options() -> None:
    fields = {f.name for f in dataclasses.fields(Settings)} - {"sources", "raw"}
    assert fields == {opt.name for opt in SCHEMA}


def test_settings_are_frozen_and_a_reload_makes_new_ones(tmp_path: Path) -> None:
    old = config.load(str(write_config(tmp_path, grace="30m", max_entries="7")))
    with pytest.raises(dataclasses.FrozenInstanceError):
        old.grace = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        old.sources["grace"] = "x"  # type: ignore[index]
    new = config.load(str(write_config(tmp_path, grace="2h", max_entries="9")))
    merged = old.reloaded(new, ("grace",))
    assert (merged.grace, merged.max_entries) == (7200.0, 7)
    assert merged.raw["grace"] == "2h" and merged.sources["grace"] == new.sources["grace"]
    assert (old.grace, old.raw["grace"]) == (1800.0, "30m")


def test_the_daemon_pid_is_the_state_lock_holder(tmp_path: Path) -> None:
    assert lock_holder(str(tmp_path)) is None  # no lock file at all
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from popbsmtp.grants.state import StateLock;"
            "assert StateLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert lock_holder(str(tmp_path)) == holder.pid
    finally:
        holder.kill()
        holder.wait()
    wait_for(lambda: lock_holder(str(tmp_path)) is None, what="the lock to go with its holder")
    mine = StateLock(str(tmp_path))
    assert mine.acquire()
    mine.release()
