"""The Debian 13 trees and the chroot runner (trixie.py) that the real-server tests use.

The mirror comes from this machine's apt sources; a program runs chrooted in a tree
with private /dev, /proc, /run and /tmp and sees only what it is given; Dovecot 2.4
logs to a /dev/log socket it is handed, without an rsyslogd of its own.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest
import trixie
from dovecot_server import DovecotServer
from mail_clients import pop3_login
from sandbox import PrivateSyslog, poll

pytestmark = pytest.mark.integration


def test_mirror_is_read_from_deb822_and_one_line_sources(tmp_path: Path) -> None:
    sources = tmp_path / "debian.sources"
    sources.write_text(
        "Types: deb\nURIs: http://security.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
    )
    assert trixie.mirror([sources]) == "http://mirror.example/debian"
    one_line = tmp_path / "old.list"
    one_line.write_text("deb [arch=amd64] http://m.example/debian bookworm main\n")
    assert trixie.mirror([one_line]) == "http://m.example/debian"
    assert trixie.mirror([tmp_path / "missing.list"]) == trixie.DEFAULT_MIRROR


def test_a_program_in_the_tree_sees_debian_13_and_private_mounts() -> None:
    root = trixie.tree("trixie")
    with tempfile.TemporaryDirectory(prefix="popbsmtp-trixie-", dir="/tmp") as work:
        (Path(work) / "seen").write_text("from outside\n")
        script = (f"cat /etc/debian_version; cat {work}/seen; ls /dev; "
                  "findmnt -n -o FSTYPE /run; echo x > /tmp/inside")  # fmt: skip
        out = subprocess.run(
            trixie.command(root, ["sh", "-c", script], binds=[Path(work)]),
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
    assert out[0].startswith("13.")
    assert "from" in out and "outside" in out
    assert {"null", "zero", "urandom", "tty"} <= set(out) and "sda" not in out
    assert out[-1] == "tmpfs"
    assert not (root / "tmp/inside").exists()  # the tree itself is never written


def test_binds_outside_tmp_are_refused() -> None:
    with pytest.raises(ValueError, match="only directories under"):
        trixie.command(trixie.tree("trixie"), ["true"], binds=[Path("/etc")])


def test_dovecot_24_logs_to_a_given_dev_log(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Dovecot 2.4 in the tree, its /dev/log a socket of the caller's (here the
    host's rsyslogd): what a journald-fed test uses."""
    work = tmp_path_factory.mktemp("devlog")
    syslog = PrivateSyslog(work / "rsyslog", selector="mail.*")
    syslog.start()
    try:
        with DovecotServer(work, version="2.4", dev_log=syslog.socket) as server:
            assert server.syslog_path is None
            assert pop3_login(server.pop3_port, "alice", "alice-pw", ("127.0.0.5", 0))
            poll(
                lambda: "Logged in: user=<alice>" in _text(syslog.rfc3339_log),
                "Dovecot 2.4's login in the caller's log",
            )
        assert "master: Dovecot v2.4." in _text(syslog.rfc3339_log)
        assert server.process_ids() == []
    finally:
        syslog.stop()


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
