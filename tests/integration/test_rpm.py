"""The RPMs, built for real with rpmbuild, inspected with rpm -qp and installed into a root.

Three builds: the default (systemd unit, distro Python packages), ``--without
systemd`` (SysV init script + chkconfig) and ``--with bundled`` (Python
dependencies in a private directory, from the wheels .ci/setup downloads).
The installed program runs from the throw-away root: --version, check-config,
the man pages, and the bundled daemon for real with nothing but the stdlib
on its path.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from support import postfix_dir, wait_for, write_config

from popbsmtp import __version__

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "packaging" / "rpm" / "build-rpm"
WHEELS = Path(os.environ.get("POPBSMTP_WHEELS", ROOT / ".venv" / "wheels"))
FLAVOURS = {"systemd": [], "sysv": ["--without", "systemd"], "bundled": ["--with", "bundled"]}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} is not installed; run .ci/setup (Debian package rpm)")
    return path


def rpm(*args: str) -> str:
    result = subprocess.run([tool("rpm"), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> Dict[str, Path]:
    if not list(WHEELS.glob("*.whl")):
        raise AssertionError(f"no wheels in {WHEELS} for the bundled build; run .ci/setup")
    tool("rpmbuild")
    built: Dict[str, Path] = {}
    for flavour, options in FLAVOURS.items():
        out = tmp_path_factory.mktemp(f"rpm-{flavour}")
        extra = ["--wheels", str(WHEELS)] if flavour == "bundled" else []
        result = subprocess.run(
            [str(BUILD), str(out), *options, *extra],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHON": sys.executable},
        )
        assert result.returncode == 0, result.stdout + result.stderr
        found = list(out.glob("*.rpm"))
        assert len(found) == 1, found
        assert result.stdout.strip() == str(found[0])
        built[flavour] = found[0]
    return built


@pytest.fixture(scope="module")
def installed(packages, tmp_path_factory) -> Dict[str, Path]:
    roots: Dict[str, Path] = {}
    for flavour, package in packages.items():
        root = tmp_path_factory.mktemp(f"root-{flavour}")
        # --noscripts: %pre would add a user to this machine's rpm-less root.
        subprocess.run(
            [tool("rpm"), "-i", "--root", str(root), "--nodeps", "--noscripts", str(package)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        roots[flavour] = root
    return roots


def files(package: Path) -> List[str]:
    return rpm("-qpl", str(package)).split()


def test_names_and_architectures(packages):
    """Architecture-specific: the C extensions (_needles.c, _envelope.c) are compiled in."""
    arch = os.uname().machine
    assert packages["systemd"].name == f"popbsmtp-{__version__}-1.{arch}.rpm"
    assert packages["sysv"].name == f"popbsmtp-{__version__}-1.sysv.{arch}.rpm"
    assert packages["bundled"].name == f"popbsmtp-{__version__}-1.bundled.{arch}.rpm"


def test_file_lists(packages):
    common = [
        "/usr/bin/popbsmtp",
        "/etc/popbsmtp/popbsmtp.conf",
        "/etc/popbsmtp/conf.d",
        "/etc/sysconfig/popbsmtp",
        "/usr/share/man/man8/popbsmtp.8.gz",
        "/usr/share/man/man5/popbsmtp.conf.5.gz",
        "/var/lib/popbsmtp",
        "/etc/postfix/popbsmtp",
        f"/usr/share/doc/popbsmtp-{__version__}/install.md",
    ]
    for flavour, package in packages.items():
        listed = files(package)
        missing = [f for f in common if f not in listed]
        assert not missing, f"{flavour}: {missing}"
        assert ("/usr/lib/systemd/system/popbsmtp.service" in listed) == (flavour != "sysv")
        assert ("/etc/rc.d/init.d/popbsmtp" in listed) == (flavour == "sysv")
        assert not [f for f in listed if "__pycache__" in f or f.endswith((".pyc", ".c"))]
        for extension in ("_needles", "_envelope"):
            found = [f for f in listed if re.search(rf"/popbsmtp/{extension}\.cpython-.*\.so$", f)]
            assert found, f"{flavour}: {extension}"
    sitearch = [
        f
        for f in files(packages["systemd"])
        if f.endswith("/site-packages/popbsmtp/cli/__init__.py")
    ]
    assert sitearch and sitearch[0].startswith("/usr/lib64/"), "it belongs in python3_sitearch"
    private = files(packages["bundled"])
    for module in (
        "popbsmtp/cli/__init__.py",
        "lmdb/__init__.py",
        "watchdog/__init__.py",
        "daemon/__init__.py",
        "netaddr/__init__.py",
    ):
        assert f"/usr/lib64/popbsmtp/{module}" in private, module
    assert not [f for f in private if "site-packages" in f]


def test_config_files_and_modes(packages):
    for package in packages.values():
        flags = rpm(
            "-qp",
            "--qf",
            "[%{FILEFLAGS:fflags}|%{FILEMODES:perms}|%{FILEUSERNAME}|%{FILENAMES}\n]",
            str(package),
        )
        rows = {line.split("|")[-1]: line.split("|")[:-1] for line in flags.splitlines()}
        assert rows["/etc/popbsmtp/popbsmtp.conf"][0] == "cn"  # %config(noreplace)
        assert rows["/etc/sysconfig/popbsmtp"][0] == "cn"
        assert rows["/var/lib/popbsmtp"][1:] == ["drwxr-x---", "popbsmtp"]
        assert rows["/etc/postfix/popbsmtp"][1:] == ["drwxr-xr-x", "popbsmtp"]
        assert rows["/usr/bin/popbsmtp"][1] == "-rwxr-xr-x"


def test_scriptlets(packages):
    for flavour, package in packages.items():
        scripts = rpm("-qp", "--scripts", str(package))
        pre = scripts.split("preinstall scriptlet")[1].split("scriptlet")[0]
        assert "useradd -r -g popbsmtp" in pre and "groupadd -r popbsmtp" in pre
        if flavour == "sysv":
            assert "/sbin/chkconfig --add popbsmtp" in scripts
            preun = scripts.split("preuninstall scriptlet")[1].split("scriptlet")[0]
            assert "service popbsmtp stop" in preun and "chkconfig --del popbsmtp" in preun
            postun = scripts.split("postuninstall scriptlet")[1]
            assert "service popbsmtp condrestart" in postun and "$1 -ge 1" in postun
        else:
            assert "preset popbsmtp.service" in scripts
            assert "popbsmtp.service" in scripts.split("postuninstall scriptlet")[1]
            assert "chkconfig" not in scripts


def test_requires(packages):
    distro = rpm("-qp", "--requires", str(packages["systemd"])).split("\n")
    for dep in (
        "python3-watchdog",
        "python3-daemon",
        "python3-lmdb",
        "python3-netaddr",
        "postfix",
        "shadow-utils",
    ):
        assert dep in distro, dep
    sysv = rpm("-qp", "--requires", str(packages["sysv"]))
    assert "chkconfig" in sysv and "initscripts" in sysv
    bundled = rpm("-qp", "--requires", str(packages["bundled"]))
    assert "python3-watchdog" not in bundled and "python3-daemon" not in bundled
    assert "python(abi) = " in bundled
    provides = rpm("-qp", "--provides", str(packages["bundled"]))
    assert "lmdb" not in provides and "python3dist" not in provides


def run_installed(root: Path, *args: str, bundled: bool = False) -> subprocess.CompletedProcess:
    launcher = root / "usr" / "bin" / "popbsmtp"
    if bundled:
        # No site-packages at all: every dependency must come from the private dir.
        command, env = ["/usr/bin/python3", "-I", "-S", str(launcher), *args], {}
    else:
        sitelib = glob.glob(str(root / "usr" / "lib*" / "python3*" / "site-packages"))
        assert len(sitelib) == 1, sitelib
        command = [sys.executable, str(launcher), *args]
        env = {"PYTHONPATH": sitelib[0]}
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **env},
    )


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_installed_program_runs(installed, flavour):
    root = installed[flavour]
    bundled = flavour == "bundled"
    version = run_installed(root, "--version", bundled=bundled)
    assert version.returncode == 0 and version.stdout.strip() == f"popbsmtp {__version__}"
    shipped = root / "etc" / "popbsmtp" / "popbsmtp.conf"
    assert shipped.read_text() == (ROOT / "init" / "popbsmtp.conf").read_text()
    # The machine's own Postfix may be unconfigured: ask the tests' instance.
    pf = ("--postfix-dir", postfix_dir())
    check = run_installed(root, "check-config", "--config", str(shipped), *pf, bundled=bundled)
    assert check.returncode == 0 and "configuration OK" in check.stdout, check.stderr
    doctor = run_installed(root, "doctor", "--config", str(shipped), *pf, bundled=bundled)
    assert "OK       speedups: C extensions" in doctor.stdout, doctor.stdout + doctor.stderr
    if flavour == "sysv":
        script = root / "etc" / "rc.d" / "init.d" / "popbsmtp"
        assert script.read_bytes() == (ROOT / "init" / "popbsmtp").read_bytes()
        assert os.access(script, os.X_OK)


def test_bundled_daemon_runs_from_the_root(installed, pf_tmp):
    """lmdb, watchdog and python-daemon load from /usr/lib64/popbsmtp and work."""
    config = write_config(pf_tmp)
    (pf_tmp / "mail.log").touch()
    launcher = installed["bundled"] / "usr" / "bin" / "popbsmtp"
    err = pf_tmp / "bundled.err"
    with open(err, "wb") as stream:
        proc = subprocess.Popen(
            [
                "/usr/bin/python3",
                "-I",
                "-S",
                str(launcher),
                "run",
                "--foreground",
                "--config",
                str(config),
            ],
            stderr=stream,
            env={"PATH": os.environ["PATH"]},
        )
        try:
            wait_for(
                lambda: "following " in err.read_text() or proc.poll() is not None,
                timeout=20,
                what="bundled daemon started",
            )
            assert proc.poll() is None, err.read_text()
            assert (pf_tmp / "pbs.lmdb").exists()
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(15)
    assert code == 0, err.read_text()


def test_installed_man_pages_render(installed):
    man = tool("man")
    for page in ("man8/popbsmtp.8.gz", "man5/popbsmtp.conf.5.gz"):
        path = installed["systemd"] / "usr" / "share" / "man" / page
        result = subprocess.run(
            [man, "--warnings", "-l", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": "0"},
        )
        assert result.returncode == 0 and result.stderr == "", result.stderr
        text = re.sub(".\b", "", result.stdout)  # drop overstrike bold/underline
        assert "NAME" in text and "SEE ALSO" in text and "popbsmtp" in text
    conf = subprocess.run(
        [man, "-l", str(installed["systemd"] / "usr/share/man/man5/popbsmtp.conf.5.gz")],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    conf = re.sub(".\b", "", conf)
    assert "ignore_networks" in conf and "log_target" in conf


def test_spec_version_matches_the_package():
    spec = (ROOT / "packaging" / "rpm" / "popbsmtp.spec").read_text()
    assert f"%global popbsmtp_version {__version__}}}" in spec
