"""Whom ``popbsmtp doctor`` asks about, and what it says about writing a directory."""

from __future__ import annotations

import os
import pwd

from popbsmtp.doctor import probes


def test_root_asks_about_the_service_user_when_it_exists(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    real = pwd.getpwnam
    fake = pwd.struct_passwd(("popbsmtp", "x", 990, 990, "", "/var/lib/popbsmtp", "/sbin/nologin"))
    monkeypatch.setattr(pwd, "getpwnam", lambda n: fake if n == "popbsmtp" else real(n))
    assert probes.service_user() == "popbsmtp"


def test_root_without_the_service_user_asks_about_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)

    def missing(name: str) -> pwd.struct_passwd:
        raise KeyError(name)

    monkeypatch.setattr(pwd, "getpwnam", missing)
    assert probes.service_user() == "root"


def test_anyone_else_asks_about_himself(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 65534)
    assert probes.service_user() == pwd.getpwuid(65534).pw_name


def test_unwritable_by_reads_modes_along_the_path(pf_tmp):
    tmp_path = pf_tmp / "above"  # pf_tmp and all above it: searchable by anyone
    shared = tmp_path / "shared"
    shared.mkdir(parents=True)
    tmp_path.chmod(0o755)
    shared.chmod(0o755)
    nobody = pwd.getpwuid(65534).pw_name
    assert probes.unwritable_by(str(shared), "root") == ""
    assert probes.unwritable_by(str(shared), nobody).startswith(f"{shared} has mode 0755, owner ")
    shared.chmod(0o777)
    assert probes.unwritable_by(str(shared), nobody) == ""
    tmp_path.chmod(0o700)  # no search permission above it
    assert probes.unwritable_by(str(shared), nobody).startswith(f"{tmp_path} has mode 0700")
    assert probes.unwritable_by(str(tmp_path / "absent"), nobody).endswith(
        "No such file or directory"
    )
    assert (
        probes.unwritable_by(str(shared), "no-such-user-here") == "no such user no-such-user-here"
    )
