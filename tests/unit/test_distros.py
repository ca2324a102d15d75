"""Distribution defaults: os-release detection and the explicit ``distro`` option."""

from __future__ import annotations

from pathlib import Path

import pytest

from popbsmtp import config
from popbsmtp.config.distros import detect, named_distro
from popbsmtp.errors import ConfigError
from popbsmtp.sources.choice import distro_mail_log

OS_RELEASES = [
    ('ID=rocky\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.3"\n', "/var/log/maillog", "rfc3164"),
    ('ID=fedora\nVERSION_ID=40\n', "/var/log/maillog", "rfc3164"),
    ('ID=debian\nVERSION_ID="12"\n', "/var/log/mail.log", "rfc3339"),
    ('ID=debian\nVERSION_ID="11"\n', "/var/log/mail.log", "rfc3164"),
    ('ID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n', "/var/log/mail.log", "rfc3339"),
    ('ID=ubuntu\nID_LIKE=debian\nVERSION_ID="22.04"\n', "/var/log/mail.log", "rfc3164"),
    ('ID="opensuse-leap"\nID_LIKE="suse opensuse"\nVERSION_ID="15.5"\n', "/var/log/mail",
     "rfc3164"),
    ("ID=freebsd\nVERSION_ID=14.0\n", "/var/log/maillog", "rfc3164"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "logfile", "envelope"), OS_RELEASES)
def test_detect(tmp_path: Path, text: str, logfile: str, envelope: str) -> None:
    path = tmp_path / "os-release"
    path.write_text(text)
    distro = detect(str(path))
    assert (distro.logfile, distro.log_format) == (logfile, envelope)


def test_explicit_distro_overrides_detection(tmp_path: Path) -> None:
    conf = tmp_path / "p.conf"
    conf.write_text("[popbsmtp]\ndistro = rhel\nmap = lmdb:/tmp/x\n")
    settings = config.load(str(conf), distro=named_distro("debian:12"))
    assert distro_mail_log(settings) == "/var/log/maillog"
    assert settings.distro == "rhel"
    assert named_distro("ubuntu:24.04").log_format == "rfc3339"


def test_explicit_logfile_beats_distro(tmp_path: Path) -> None:
    conf = tmp_path / "p.conf"
    conf.write_text("[popbsmtp]\ndistro = suse\nlogfile = /srv/mail.log\nmap = lmdb:/tmp/x\n")
    assert config.load(str(conf)).logfile == "/srv/mail.log"


def test_unknown_distro_is_a_config_error_naming_file_line_and_key(tmp_path: Path) -> None:
    conf = tmp_path / "p.conf"
    conf.write_text("[popbsmtp]\nmap = lmdb:/tmp/x\ndistro = plan9\n")
    with pytest.raises(ConfigError, match=r"p\.conf:3: distro: .*plan9"):
        config.load(str(conf))
