"""The RPMs, built for real with rpmbuild, checked with rpm -qp and rpmlint, installed in a root.

Three builds: the default (systemd unit, distro Python packages, noarch),
``--without systemd`` (SysV init script + chkconfig, noarch) and ``--with
bundled`` (Python dependencies built from the sdists .ci/setup downloads,
in a private directory).  Each build runs the spec's %check (the unit and
profile tests against the build root).  The installed program runs from the
throw-away root: --version, check-config on the shipped config, the man
pages, and the bundled daemon for real with nothing but the stdlib on its
path.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from support import append, dovecot_login, postfix_dir, wait_for, wait_started, write_config

from popbsmtp import __version__

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "packaging" / "rpm" / "build-rpm"
SPEC = ROOT / "packaging" / "rpm" / "popbsmtp.spec"
SDISTS = Path(os.environ.get("POPBSMTP_SDISTS", ROOT / ".venv" / "sdists"))
FLAVOURS = {"systemd": [], "sysv": ["--without", "systemd"], "bundled": ["--with", "bundled"]}
RELEASE = "2"
# The bundled projects: spec name -> (python3dist name, licence file shipped).
BUNDLED = {
    "watchdog": "LICENSE.watchdog",
    "python-daemon": "LICENSE.python-daemon",
    "lockfile": "LICENSE.lockfile",
    "lmdb": "LICENSE.lmdb",
    "netaddr": "LICENSE.netaddr",
}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} is not installed; run .ci/setup (Debian package rpm)")
    return path


def rpm(*args: str) -> str:
    result = subprocess.run([tool("rpm"), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def bundled_versions() -> Dict[str, str]:
    """The spec's ``%global bundled_NAME_version VERSION`` lines."""
    found = re.findall(r"^%global bundled_(\w+)_version (\S+)$", SPEC.read_text(), re.M)
    return {name.replace("_", "-"): version for name, version in found}


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> Dict[str, subprocess.CompletedProcess]:
    missing = [
        f"{name}-{version}.tar.gz"
        for name, version in bundled_versions().items()
        if not (SDISTS / f"{name}-{version}.tar.gz").exists()
    ]
    if missing:
        raise AssertionError(f"{missing} not in {SDISTS} for the bundled build; run .ci/setup")
    tool("rpmbuild")
    # The three builds at once (each has a topdir of its own): most of their
    # time is %check's test run, one process each.  Output goes to files, so
    # a full pipe never holds one build up while another is waited for.
    running: Dict[str, Tuple[subprocess.Popen, Path]] = {}
    for flavour, options in FLAVOURS.items():
        out = tmp_path_factory.mktemp(f"rpm-{flavour}")
        extra = ["--sdists", str(SDISTS)] if flavour == "bundled" else []
        with open(out / "stdout", "w") as stdout, open(out / "stderr", "w") as stderr:
            proc = subprocess.Popen(
                [str(BUILD), str(out), *options, *extra],
                stdout=stdout,
                stderr=stderr,
                text=True,
            )
        running[flavour] = (proc, out)
    results: Dict[str, subprocess.CompletedProcess] = {}
    try:
        for flavour, (proc, out) in running.items():
            code = proc.wait(timeout=900)
            texts = [(out / name).read_text() for name in ("stdout", "stderr")]
            results[flavour] = subprocess.CompletedProcess(proc.args, code, *texts)
    finally:
        for proc, _ in running.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for flavour, result in results.items():
        assert result.returncode == 0, flavour + result.stdout + result.stderr[-5000:]
    return results


@pytest.fixture(scope="module")
def packages(builds) -> Dict[str, Path]:
    built: Dict[str, Path] = {}
    for flavour, result in builds.items():
        listed = result.stdout.split()
        assert len(listed) == 1, result.stdout
        built[flavour] = Path(listed[0])
        assert built[flavour].exists()
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
    """popbsmtp is pure Python: noarch; only the bundled lmdb binding is compiled."""
    arch = os.uname().machine
    name = f"popbsmtp-{__version__}-{RELEASE}"
    assert packages["systemd"].name == f"{name}.noarch.rpm"
    assert packages["sysv"].name == f"{name}.sysv.noarch.rpm"
    assert packages["bundled"].name == f"{name}.bundled.{arch}.rpm"
    for flavour, package in packages.items():
        assert rpm("-qp", "--qf", "%{ARCH}", str(package)) == package.name.split(".")[-2]
        compiled = [f for f in files(package) if f.endswith(".so")]
        if flavour == "bundled":
            assert [f for f in compiled if f.startswith("/usr/lib64/popbsmtp/lmdb/")], compiled
            assert not [f for f in compiled if "/popbsmtp/popbsmtp/" in f], compiled
        else:
            assert compiled == [], compiled


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_check_ran_the_tests_against_the_build_root(builds, flavour):
    log = builds[flavour].stderr
    tested = re.search(r"^%check: testing (\S+)$", log, re.M)
    assert tested, log[-3000:]
    assert "/BUILDROOT/" in tested.group(1) and tested.group(1).endswith("/popbsmtp/__init__.py")
    if flavour == "bundled":
        assert "/usr/lib64/popbsmtp/popbsmtp/" in tested.group(1)
    summary = re.search(r"^(\d+) passed, (\d+) deselected in ", log, re.M)
    assert summary, log[-3000:]
    assert int(summary.group(1)) >= 500 and int(summary.group(2)) == 1
    assert not re.search(r"^\d+ failed|^FAILED |^ERROR ", log, re.M)


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
        "/usr/lib/sysusers.d/popbsmtp.conf",
        "/usr/lib/tmpfiles.d/popbsmtp.conf",
        "/run/popbsmtp",
        f"/usr/share/doc/popbsmtp-{__version__}/install.md",
        f"/usr/share/licenses/popbsmtp-{__version__}/LICENSE",
    ]
    for flavour, package in packages.items():
        listed = files(package)
        missing = [f for f in common if f not in listed]
        assert not missing, f"{flavour}: {missing}"
        assert ("/usr/lib/systemd/system/popbsmtp.service" in listed) == (flavour != "sysv")
        assert ("/etc/rc.d/init.d/popbsmtp" in listed) == (flavour == "sysv")
        assert not [f for f in listed if "__pycache__" in f or f.endswith((".pyc", ".c"))]
    sitelib = [
        f
        for f in files(packages["systemd"])
        if f.endswith("/site-packages/popbsmtp/cli/__init__.py")
    ]
    assert sitelib and sitelib[0].startswith("/usr/lib/python3"), "it belongs in python3_sitelib"
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
            "[%{FILEFLAGS:fflags}|%{FILEMODES:perms}|%{FILEUSERNAME}|%{FILEGROUPNAME}"
            "|%{FILENAMES}\n]",
            str(package),
        )
        rows = {line.split("|")[-1]: line.split("|")[:-1] for line in flags.splitlines()}
        assert rows["/etc/popbsmtp/popbsmtp.conf"][0] == "cn"  # %config(noreplace)
        assert rows["/etc/sysconfig/popbsmtp"][0] == "cn"
        assert rows["/var/lib/popbsmtp"][1:3] == ["drwx------", "popbsmtp"]
        assert rows["/etc/postfix/popbsmtp"][1:3] == ["drwxr-xr-x", "popbsmtp"]
        # On tmpfs: recorded (%ghost), made by systemd-tmpfiles with these attributes.
        assert rows["/run/popbsmtp"] == ["g", "drwxr-s---", "popbsmtp", "postfix"]
        assert rows["/usr/lib/tmpfiles.d/popbsmtp.conf"] == ["", "-rw-r--r--", "root", "root"]
        assert rows["/usr/bin/popbsmtp"][1] == "-rwxr-xr-x"
        licences = [name for name, row in rows.items() if row[0] == "l"]
        assert f"/usr/share/licenses/popbsmtp-{__version__}/LICENSE" in licences


def test_licences(packages, installed):
    for flavour, root in installed.items():
        licensedir = root / "usr" / "share" / "licenses" / f"popbsmtp-{__version__}"
        assert (licensedir / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
        shipped = sorted(p.name for p in licensedir.iterdir())
        if flavour != "bundled":
            assert shipped == ["LICENSE"]
            assert rpm("-qp", "--qf", "%{LICENSE}", str(packages[flavour])) == "GPL-2.0-or-later"
    licence = rpm("-qp", "--qf", "%{LICENSE}", str(packages["bundled"]))
    assert licence.split(" AND ") == [
        "GPL-2.0-or-later", "Apache-2.0", "BSD-3-Clause", "MIT", "OLDAP-2.8"
    ]  # fmt: skip
    licensedir = installed["bundled"] / "usr" / "share" / "licenses" / f"popbsmtp-{__version__}"
    for name in BUNDLED.values():
        assert (licensedir / name).stat().st_size > 500, name
    assert "OpenLDAP Public License" in (licensedir / "LICENSE.lmdb").read_text()
    assert "Apache License" in (licensedir / "LICENSE.watchdog").read_text()
    assert "MIT license" in (licensedir / "LICENSE.lockfile").read_text()


def test_bundled_provides_name_each_sdist_built(packages, installed):
    versions = bundled_versions()
    assert sorted(versions) == sorted(BUNDLED)
    provides = rpm("-qp", "--provides", str(packages["bundled"])).splitlines()
    bundled = sorted(p for p in provides if p.startswith("bundled("))
    assert bundled == sorted(f"bundled(python3dist({n})) = {v}" for n, v in versions.items())
    assert not [p for p in provides if p.startswith(("python3dist", "python3.", "lmdb"))]
    private = installed["bundled"] / "usr" / "lib64" / "popbsmtp"
    for name, version in versions.items():
        dist_info = private / f"{name.replace('-', '_')}-{version}.dist-info"
        assert (dist_info / "METADATA").exists(), dist_info
    # built here from the sdist, not unpacked from a PyPI wheel
    wheel = (private / f"lmdb-{versions['lmdb']}.dist-info" / "WHEEL").read_text()
    assert "Root-Is-Purelib: false" in wheel and "manylinux" not in wheel
    spec = SPEC.read_text()
    for name in versions:
        pypi = f"/{name[0]}/{name}/{name}-%{{bundled_{name.replace('-', '_')}_version}}.tar.gz"
        assert pypi in spec, name


def test_source0_is_the_release_tarball_url():
    spec = SPEC.read_text()
    assert re.search(r"^URL: +https://github.com/popbsmtp/popbsmtp$", spec, re.M)
    assert re.search(
        r"^Source0: +%\{url\}/archive/v%\{version\}/%\{name\}-%\{version\}\.tar\.gz$", spec, re.M
    )


def test_rpmlint_has_no_errors_and_every_warning_is_justified(packages):
    readme = (ROOT / "packaging" / "rpm" / "README.md").read_text()
    justified = set(re.findall(r"^\| `([a-z%-]+)`(?:, `([a-z%-]+)`)? \|", readme, re.M))
    names = {name for pair in justified for name in pair if name}
    assert {"non-standard-uid", "no-manual-page-for-binary"} <= names
    result = subprocess.run(
        [tool("rpmlint"), "-c", str(ROOT / "packaging" / "rpm" / "rpmlint.toml")]
        + [str(p) for p in packages.values()]
        + [str(SPEC)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert re.search(r"\b3 packages and 1 specfiles checked; 0 errors, ", report), report
    findings = re.findall(r"^popbsmtp\.\w+(?::\d+)?: ([EW]): (\S+)", report, re.M)
    assert findings, report  # the known warnings do occur: rpmlint really looked
    assert not [name for level, name in findings if level == "E"], report
    unexplained = sorted({name for _, name in findings} - names)
    assert not unexplained, f"warnings not justified in packaging/rpm/README.md: {unexplained}"


def sysusers_line() -> List[str]:
    """The 'u' line of init/popbsmtp.sysusers: type, name, id, "comment", home, shell."""
    text = (ROOT / "init" / "popbsmtp.sysusers").read_text()
    lines = [ln for ln in text.splitlines() if ln[:2] == "u "]
    assert len(lines) == 1, lines
    found = re.fullmatch(r'u (\S+) (\S+) "([^"]*)" (\S+) (\S+)', lines[0])
    assert found, lines[0]
    return list(found.groups())


def test_service_user_comes_from_the_sysusers_file(packages, installed):
    name, uid, comment, home, shell = sysusers_line()
    assert (name, uid) == ("popbsmtp", "-")
    for flavour, package in packages.items():
        shipped = installed[flavour] / "usr" / "lib" / "sysusers.d" / "popbsmtp.conf"
        assert shipped.read_text() == (ROOT / "init" / "popbsmtp.sysusers").read_text()
        pre = rpm("-qp", "--qf", "%{PREIN}", str(package))
        # No systemd-rpm-macros here (rpmbuild on Debian): the plain fallback,
        # which must make the very user the sysusers file describes.
        assert f"getent group {name} >/dev/null || groupadd -r {name}" in pre
        useradd = f'useradd -r -g {name} -d {home} -s {shell} \\\n            -c "{comment}" {name}'
        assert useradd in pre, pre
    spec = SPEC.read_text()
    assert "%sysusers_create_compat %{SOURCE1}" in spec
    assert re.search(r"^Source1: +%\{name\}\.sysusers$", spec, re.M)


def test_the_socketmap_directory_comes_from_the_tmpfiles_file(packages, installed):
    """What systemd-tmpfiles makes /run/popbsmtp from, and the %post that runs it."""
    shipped = (ROOT / "init" / "popbsmtp.tmpfiles").read_text()
    lines = [line for line in shipped.splitlines() if line and not line.startswith("#")]
    assert lines == ["d /run/popbsmtp 2750 popbsmtp postfix -"]
    for flavour, package in packages.items():
        tmpfiles = installed[flavour] / "usr" / "lib" / "tmpfiles.d" / "popbsmtp.conf"
        assert tmpfiles.read_text() == shipped, flavour
        post = rpm("-qp", "--qf", "%{POSTIN}", str(package))
        # The plain fallback of %tmpfiles_create (no systemd-rpm-macros here).
        create = (
            "[ -x /usr/bin/systemd-tmpfiles ] && "
            "/usr/bin/systemd-tmpfiles --create popbsmtp.conf >/dev/null 2>&1 || :"
        )
        assert post.splitlines()[0] == create, post
        # Postfix (and with it the group postfix) is there before %post runs.
        requires = rpm("-qp", "--qf", "[%{REQUIREFLAGS:deptype} %{REQUIRENAME}\n]", str(package))
        assert "post postfix" in requires.splitlines(), requires
    spec = SPEC.read_text()
    assert re.search(r"^%post\n%tmpfiles_create %\{name\}\.conf$", spec, re.M)


def test_scriptlets(packages):
    # On the last erase only: stop first, then empty Postfix's table; never fail.
    withdraw = re.compile(
        r"^if \[ \$1 -eq 0 \]; then\n(?:    .*\n)*?"
        r"    /usr/bin/popbsmtp withdraw >/dev/null 2>&1 \|\| :\n",
        re.M,
    )
    for flavour, package in packages.items():
        scripts = rpm("-qp", "--scripts", str(package))
        preun = scripts.split("preuninstall scriptlet")[1].split("scriptlet")[0]
        assert withdraw.search(preun), preun
        if flavour == "sysv":
            assert "/sbin/chkconfig --add popbsmtp" in scripts
            assert preun.index("service popbsmtp stop") < preun.index("popbsmtp withdraw")
            assert "chkconfig --del popbsmtp" in preun
            postun = scripts.split("postuninstall scriptlet")[1]
            assert "service popbsmtp condrestart" in postun and "$1 -ge 1" in postun
        else:
            assert preun.index("disable --now popbsmtp.service") < preun.index("withdraw")
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
        "postfix-lmdb",
        "shadow-utils",
    ):
        assert dep in distro, dep
    sysv = rpm("-qp", "--requires", str(packages["sysv"]))
    assert "chkconfig" in sysv and "initscripts" in sysv
    bundled = rpm("-qp", "--requires", str(packages["bundled"]))
    assert "python3-watchdog" not in bundled and "python3-daemon" not in bundled
    assert "python(abi) = " in bundled


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
    explain = run_installed(
        root, "check-config", "--explain", "--config", str(shipped), *pf, bundled=bundled
    )
    assert re.search(
        rf"^map = lmdb:/etc/postfix/popbsmtp/clients +# {re.escape(str(shipped))}:\d+$",
        explain.stdout,
        re.M,
    ), explain.stdout + explain.stderr
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
            wait_started(proc, err, "bundled daemon started")
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


# In a private mount namespace, /etc/postfix is the installed root's: the daemon
# sees the packaged /etc/postfix/popbsmtp at its real path and nothing of the host's.
FIRST_START = """\
set -eu
root="$1"; shift
mount --bind "$root/etc/postfix" /etc/postfix
exec "$@"
"""
SERVICE_UID = 65534  # stands in for the popbsmtp user, which this machine lacks


def first_start(root: Path, work: Path, map_line: str = "") -> subprocess.Popen:
    """The installed daemon, as an unprivileged user, on the packaged popbsmtp.conf."""
    (work / "mail.log").touch()
    state = work / "state"
    state.mkdir(mode=0o700)
    os.chown(state, SERVICE_UID, SERVICE_UID)
    # Only what must differ on a test machine: the log, the state, no postconf.
    (root / "etc" / "popbsmtp" / "conf.d" / "test.conf").write_text(
        f"[popbsmtp]\nlogfile = {work}/mail.log\nstate_dir = {state}\n"
        f"ignore_networks = none\nmax_session = 1s\n{map_line}"
    )
    sitelib = glob.glob(str(root / "usr" / "lib" / "python3*" / "site-packages"))
    assert len(sitelib) == 1, sitelib
    command = [
        "/usr/bin/python3", str(root / "usr" / "bin" / "popbsmtp"), "run", "--foreground",
        "--config", str(root / "etc" / "popbsmtp" / "popbsmtp.conf"),
    ]  # fmt: skip
    privileges = [tool("setpriv"), f"--reuid={SERVICE_UID}", f"--regid={SERVICE_UID}",
                  "--clear-groups"]  # fmt: skip
    with open(work / "daemon.err", "wb") as err:  # the child keeps its own copy
        return subprocess.Popen(
            [tool("unshare"), "--mount", "--propagation", "private", "--",
             "sh", "-c", FIRST_START, "sh", str(root), *privileges, *command],
            stderr=err,
            env={"PATH": os.environ["PATH"], "PYTHONPATH": sitelib[0], "LANG": "C.UTF-8"},
        )  # fmt: skip


def test_packaged_defaults_work_on_first_start(packages, pf_tmp):
    """The shipped map lies in the directory the package makes for the service user."""
    root = pf_tmp / "root"
    subprocess.run(
        [tool("rpm"), "-i", "--root", str(root), "--nodeps", "--noscripts",
         str(packages["systemd"])],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    table = root / "etc" / "postfix" / "popbsmtp"
    # What %attr(0755,popbsmtp,popbsmtp) gives where the user exists.
    assert stat.S_IMODE(table.stat().st_mode) == 0o755
    os.chown(table, SERVICE_UID, SERVICE_UID)
    proc = first_start(root, pf_tmp)
    err = pf_tmp / "daemon.err"
    try:
        wait_started(proc, err, "daemon started")
        append(pf_tmp / "mail.log", dovecot_login("192.0.2.61"))

        def granted() -> bool:
            query = subprocess.run(
                [tool("postmap"), "-c", postfix_dir(), "-q", "192.0.2.61",
                 f"lmdb:{table}/clients"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            return query.stdout.strip() == "OK"

        wait_for(granted, timeout=20, what="grant in the packaged table")
        assert (table / "clients.lmdb").stat().st_uid == SERVICE_UID
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
    assert code == 0, err.read_text()


def test_the_built_in_default_map_would_not_start(packages, pf_tmp):
    """Why the package sets map: the service user cannot create files in /etc/postfix."""
    root = pf_tmp / "root"
    subprocess.run(
        [tool("rpm"), "-i", "--root", str(root), "--nodeps", "--noscripts",
         str(packages["systemd"])],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    proc = first_start(root, pf_tmp, "map = lmdb:/etc/postfix/pop-before-smtp\n")
    code = proc.wait(30)
    text = (pf_tmp / "daemon.err").read_text()
    assert code != 0 and "cannot create files in the table directory /etc/postfix" in text, text
