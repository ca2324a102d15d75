"""Hostile numbers, requests and state files: a clear error or set aside, never a crash.

Each case once crashed the daemon (new grants failed closed, but the grants
already in the table stopped expiring until a restart).  Checked on the real
daemon and the real CLI; the map is read with the real ``postmap -q``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from postfix_instance import postmap_query
from support import Daemon, append, dovecot_login, popbsmtp, wait_for, write_config

from popbsmtp import config
from popbsmtp.cli import admin
from popbsmtp.errors import PopbsmtpError

NINES = "9" * 400


def _granted(pf_tmp: Path, ip: str) -> bool:
    return postmap_query(ip, f"lmdb:{pf_tmp}/pbs") is not None


def _login_works(pf_tmp: Path, ip: str) -> None:
    append(pf_tmp / "mail.log", dovecot_login(ip))
    wait_for(lambda: _granted(pf_tmp, ip), timeout=15, what=f"{ip} granted")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("grace", NINES),
        ("grace", "99999999999d"),
        ("max_session", "31d"),
        ("poll_interval", NINES + "s"),
        ("max_entries", NINES),
        ("max_line_length", "100000000"),
    ],
)
def test_check_config_bounds_every_number(pf_tmp, key, value):
    cfg = write_config(pf_tmp, **{key: value})
    result = popbsmtp("check-config", "-c", str(cfg), check=False)
    assert result.returncode == 78, result.stdout + result.stderr
    assert "popbsmtp.conf:" in result.stderr and f": {key}: " in result.stderr
    assert "Traceback" not in result.stderr
    assert NINES not in result.stderr  # the value is quoted short, if at all


def test_longest_grace_still_runs(pf_tmp):
    with Daemon(write_config(pf_tmp, grace="30d")) as daemon:
        _login_works(pf_tmp, "192.0.2.50")
        assert daemon.stop() == 0


@pytest.mark.parametrize("length", [NINES, "99999999999d", "31d"])
def test_add_for_is_bounded_offline_and_online(pf_tmp, length):
    cfg = write_config(pf_tmp)
    result = popbsmtp("add", "192.0.2.51", "--for", length, "-c", str(cfg), check=False)
    assert result.returncode != 0 and "added" not in result.stdout
    assert "30d" in result.stderr and "Traceback" not in result.stderr
    with Daemon(cfg) as daemon:
        result = popbsmtp("add", "192.0.2.51", "--for", length, "-c", str(cfg), check=False)
        assert result.returncode != 0 and "added" not in result.stdout
        assert not _granted(pf_tmp, "192.0.2.51")
        assert daemon.stop() == 0


def test_a_request_the_daemon_refuses_is_not_reported_as_done(pf_tmp):
    """The daemon sets a bad request aside; the tool sees that and says so."""
    cfg = write_config(pf_tmp)
    with Daemon(cfg) as daemon:
        settings = config.load(str(cfg))
        with pytest.raises(PopbsmtpError, match="the daemon refused the request"):
            admin.perform(settings, {"op": "add", "ip": "192.0.2.52", "grace": 1e12})
        assert not _granted(pf_tmp, "192.0.2.52")
        assert daemon.stop() == 0


def _queue(pf_tmp: Path, body: str) -> Path:
    spool = pf_tmp / "state" / "control"
    spool.mkdir(parents=True, exist_ok=True, mode=0o700)
    (pf_tmp / "state").chmod(0o750)
    tmp = spool / ".hostile"
    tmp.write_text(body)
    final = spool / "req-00000000000000000001-1.json"
    os.rename(tmp, final)
    return final


@pytest.mark.parametrize("body", ["[" * 100_000, "[" * 900 + "]" * 900, " " * 100_000 + "{}"])
def test_hostile_control_request_is_set_aside_once(pf_tmp, body):
    cfg = write_config(pf_tmp)
    queued = _queue(pf_tmp, body)  # queued while stopped: read at start
    with Daemon(cfg) as daemon:
        assert "setting aside bad control request" in daemon.log()
        _login_works(pf_tmp, "192.0.2.53")
        assert daemon.stop() == 0
    assert not queued.exists()
    assert (queued.parent / ("bad-" + queued.name)).exists()
    with Daemon(cfg) as daemon:  # never retried: the next start is clean
        assert "bad control request" not in daemon.log()
        _queue(pf_tmp, body)  # and while running
        daemon.wait_log("setting aside bad control request")
        _login_works(pf_tmp, "192.0.2.54")
        assert daemon.stop() == 0


def _state(pf_tmp: Path, text: str) -> Path:
    state = pf_tmp / "state"
    state.mkdir(mode=0o750, exist_ok=True)
    (state / "state.json").write_text(text)
    return state


POSITION = {"path": "", "dev": 1, "inode": 1, "offset": 0, "head_len": 1e30, "head": ""}


@pytest.mark.parametrize(
    "text",
    [
        '{"version": 1, "saved": 0, "position": ' + "[" * 100_000 + ', "grants": []}',
        '{"version": 1, "grants": [' + "[" * 100_000 + "]}",
        json.dumps({"version": 1, "saved": 0, "position": POSITION, "grants": []}),
        json.dumps({"version": 1, "saved": 1e400, "position": None, "grants": []}),
        json.dumps({"version": 1, "position": {**POSITION, "head_len": 0, "offset": -5}}),
    ],
    ids=["nested-position", "nested-grants", "head_len-1e30", "saved-inf", "negative-offset"],
)
def test_hostile_state_file_is_set_aside(pf_tmp, text):
    state = _state(pf_tmp, text)
    with Daemon(write_config(pf_tmp)) as daemon:
        assert "is unreadable" in daemon.log() and "set aside" in daemon.log()
        _login_works(pf_tmp, "192.0.2.55")
        assert daemon.stop() == 0
    assert list(state.glob("state.json.corrupt-*"))


def test_lock_symlink_is_a_clear_error(pf_tmp):
    state = _state(pf_tmp, "")
    (state / "state.json").unlink()
    os.symlink(pf_tmp / "elsewhere", state / "lock")
    daemon = Daemon(write_config(pf_tmp)).start(ready=False)
    assert daemon.proc is not None
    code = daemon.proc.wait(30)
    daemon._err.close()
    assert code != 0
    assert f"cannot open the lock file {state}/lock: it is a symbolic link" in daemon.log()
    assert "Traceback" not in daemon.log()
    assert not (pf_tmp / "elsewhere").exists()
