"""Who may own what the daemon trusts: root, its effective user, the packaged service user.

The service user is looked up by name (``popbsmtp``); this machine has none,
so the lookup is replaced.  Real directories, real ``chown``.
"""

from __future__ import annotations

import os
import pwd

import pytest

from popbsmtp.maps import _files
from popbsmtp.maps._files import owner_problem, trusted_uids

SERVICE_UID = 4242


@pytest.fixture
def service_user(monkeypatch):
    real = pwd.getpwnam

    def getpwnam(name: str):
        if name == _files.SERVICE_USER:
            return pwd.struct_passwd((name, "x", SERVICE_UID, SERVICE_UID, "", "/", "/bin/false"))
        return real(name)

    monkeypatch.setattr(_files.pwd, "getpwnam", getpwnam)


def test_root_tools_trust_what_the_service_user_owns(tmp_path, service_user):
    assert trusted_uids() == {0, os.geteuid(), SERVICE_UID}
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, SERVICE_UID, SERVICE_UID)  # the packaged daemon's state_dir
    assert owner_problem(str(state)) is None


def test_anyone_else_is_refused_with_who_and_where(tmp_path, service_user):
    above = tmp_path / "above"
    (above / "maps").mkdir(parents=True)
    os.chown(above, SERVICE_UID + 1, SERVICE_UID + 1)
    problem = owner_problem(str(above / "maps"))
    assert problem is not None
    assert f"{above}, above or behind it, is owned by uid {SERVICE_UID + 1}" in problem


def test_a_symlink_to_a_foreign_directory_is_checked_behind_it(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    os.chown(foreign, 65534, 65534)
    link = tmp_path / "link"
    os.symlink(foreign, link)
    problem = owner_problem(str(link))
    assert problem is not None and f"{foreign}, above or behind it" in problem


def test_without_a_service_user_only_root_and_ourselves(monkeypatch):
    def missing(name: str):
        raise KeyError(name)

    monkeypatch.setattr(_files.pwd, "getpwnam", missing)
    assert trusted_uids() == {0, os.geteuid()}
