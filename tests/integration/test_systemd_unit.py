"""The systemd unit (checked by the real systemd-analyze) and the sd_notify protocol."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest
from support import Daemon, write_config

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "init" / "popbsmtp.service"


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        raise AssertionError("systemd-analyze is not installed; run .ci/setup")
    return path


def settings() -> Dict[str, List[str]]:
    found: Dict[str, List[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.fixture
def checkable_unit(tmp_path):
    """The unit with ExecStart pointing at an executable that exists here, and its man pages.

    systemd-analyze verify insists the binary exists; that path is the only change.
    """
    binary = tmp_path / "bin" / "popbsmtp"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    text = UNIT.read_text()
    assert text.count("/usr/bin/popbsmtp") == 2  # ExecStart and ExecStopPost
    unit = tmp_path / "popbsmtp.service"
    unit.write_text(text.replace("/usr/bin/popbsmtp", str(binary)))
    mandir = tmp_path / "man"
    for page, section in (("popbsmtp.8", "man8"), ("popbsmtp.conf.5", "man5")):
        (mandir / section).mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "docs" / "man" / page, mandir / section / page)
    return unit, mandir


def test_systemd_analyze_verify_passes_with_man_pages(checkable_unit):
    unit, mandir = checkable_unit
    result = subprocess.run(
        [systemd_analyze(), "verify", "--man=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MANPATH": str(mandir), "SYSTEMD_LOG_LEVEL": "notice"},
    )
    assert result.returncode == 0, result.stderr
    assert "popbsmtp" not in result.stderr, result.stderr


def test_hardening_scores_ok_in_systemd_analyze_security(checkable_unit):
    unit, _ = checkable_unit
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", "--threshold=25", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    level = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert level, result.stdout + result.stderr
    assert result.returncode == 0 and float(level.group(1)) <= 2.5, result.stdout


def test_unit_has_the_promised_directives():
    found = settings()
    one = {key: values[-1] for key, values in found.items()}
    assert one["Type"] == "notify"
    assert "run --foreground" in one["ExecStart"]
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["Restart"] == "on-failure"
    # A setting or permission error (exit 78) is not retried; a crash is, after the
    # table was emptied by the same command the daemon's OPTIONS configure.
    assert one["RestartPreventExitStatus"] == "78"
    assert one["ExecStopPost"] == "/usr/bin/popbsmtp withdraw $OPTIONS"
    assert one["StateDirectory"] == "popbsmtp"
    assert one["User"] == "popbsmtp"
    assert one["SupplementaryGroups"] == "systemd-journal"  # journalctl reads the journal
    assert one["ProtectSystem"] == "strict"
    assert one["ProtectHome"] == "yes" and one["PrivateTmp"] == "yes"
    assert one["NoNewPrivileges"] == "yes"
    assert one["CapabilityBoundingSet"] == "CAP_DAC_READ_SEARCH"
    assert one["AmbientCapabilities"] == "CAP_DAC_READ_SEARCH"
    # The table's directory recommended in docs/install.md and the spec must be writable.
    writable = " ".join(found["ReadWritePaths"]).split()
    assert "-/etc/postfix/popbsmtp" in writable
    # The socketmap's directory, made by the packages' tmpfiles.d file as
    # popbsmtp:postfix 2750; RuntimeDirectory= would make it the service's group.
    assert "-/run/popbsmtp" in writable
    assert not [key for key in found if key.startswith("RuntimeDirectory")]
    tmpfiles = (ROOT / "init" / "popbsmtp.tmpfiles").read_text()
    assert "\nd /run/popbsmtp 2750 popbsmtp postfix -\n" in tmpfiles
    spec = (ROOT / "packaging" / "rpm" / "popbsmtp.spec").read_text()
    assert "%{_sysconfdir}/postfix/%{name}" in spec
    assert "lmdb:/etc/postfix/popbsmtp/clients" in (ROOT / "docs" / "install.md").read_text()


class Manager:
    """The manager's end of $NOTIFY_SOCKET: a real unix datagram socket."""

    def __init__(self, address: str, bind_to: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind_to)
        self.sock.settimeout(15)

    def next(self) -> str:
        return self.sock.recv(4096).decode()


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_ready_reloading_stopping(pf_tmp, abstract):
    if abstract:
        name = f"popbsmtp-test-{os.getpid()}-{id(pf_tmp)}"
        manager = Manager("@" + name, "\0" + name)
    else:
        path = str(pf_tmp / "notify.sock")
        manager = Manager(path, path)
    config = write_config(pf_tmp)
    daemon = Daemon(config)
    old = os.environ.get("NOTIFY_SOCKET")
    os.environ["NOTIFY_SOCKET"] = manager.address  # inherited by the daemon only
    try:
        daemon.start(ready=False)
    finally:
        if old is None:
            del os.environ["NOTIFY_SOCKET"]
        else:
            os.environ["NOTIFY_SOCKET"] = old
    try:
        assert manager.next().startswith("READY=1")
        assert "following " in daemon.log(), "READY=1 before the daemon was ready"
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        assert manager.next().startswith("RELOADING=1\nMONOTONIC_USEC=")
        assert manager.next().startswith("READY=1")
        daemon.proc.send_signal(signal.SIGTERM)
        assert manager.next() == "STOPPING=1"
        assert daemon.proc.wait(15) == 0  # one TERM only: a second one means "exit now"
        daemon.stop()
    finally:
        manager.sock.close()
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait(10)
