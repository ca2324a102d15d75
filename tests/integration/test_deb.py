"""The .deb, built for real with packaging/deb/build-deb, checked with lintian,
then installed, upgraded, removed and purged with dpkg in a Debian 12 tree.

The tree is the debootstrap that .ci/setup caches with the package's
dependencies (and rsyslog, which the package recommends) already installed,
so no step needs the network.  Every step
runs in private mount and PID namespaces that mount the cached tree under an
overlay whose upper directory is the test's own: the cache is never changed,
nothing is installed on this machine, and a daemon left behind dies with its
namespace.  systemd is not PID 1 there, so the package enables its unit but
starts nothing: the test runs the daemon itself as the service user would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict

import pytest

from popbsmtp import __version__

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "packaging" / "deb" / "build-deb"
TREE = Path(os.environ.get("POPBSMTP_DEB_TREE", "/var/cache/popbsmtp-ci/bookworm-deb"))
pytestmark = pytest.mark.integration
FIRST, SECOND = f"{__version__}-1", f"{__version__}-2"
TABLE = "lmdb:/etc/postfix/popbsmtp/clients"
SOCKETMAP = "socketmap:unix:/run/popbsmtp/socketmap:popbsmtp"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# Mounts the overlay, /proc of the new PID namespace, /dev (with /dev/pts,
# for apt's log) and the .deb directory (read-only at /mnt), then runs the script in the tree.
ENTER = """
mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4"
mount -t proc proc "$4/proc"
mount --rbind /dev "$4/dev"
mount --bind -o ro "$5" "$4/mnt"
exec chroot "$4" /bin/sh -euc "$6"
"""

# The daemon on the packaged configuration, as the unit runs it (user and
# group popbsmtp, supplementary group adm for /var/log/mail.log), until a
# Dovecot login reaches the table; then it is killed like a crash, which
# leaves the grant in the table.  Polls with a deadline of 20 s.
GRANT_THEN_CRASH = r"""
install -m 0640 -g adm /dev/null /var/log/mail.log
# rsyslog has written the mail log (logfile = auto follows it while it is written)
echo "$(date -u +%Y-%m-%dT%H:%M:%S.000000+00:00) mail postfix/master[1]: daemon started" \
    >>/var/log/mail.log
setpriv --reuid popbsmtp --regid popbsmtp --groups adm popbsmtp run --foreground 2>/tmp/daemon.log &
daemon=$!
poll() { i=0; until "$@"; do i=$((i + 1)); [ $i -lt 200 ] || return 1; sleep 0.1; done; }
poll test -e /etc/postfix/popbsmtp/clients.lmdb || { cat /tmp/daemon.log >&2; exit 1; }
login="pop3-login: Login: user=<alice>, method=PLAIN, rip=192.0.2.11, lip=192.0.2.1"
login="$login, mpid=3219, session=<Uv6Lxjth/YF/AAAF>"
echo "$(date -u +%Y-%m-%dT%H:%M:%S.000000+00:00) mail dovecot: $login" >>/var/log/mail.log
poll postmap -q 192.0.2.11 TABLE >/dev/null || { cat /tmp/daemon.log >&2; exit 1; }
kill -KILL $daemon
wait $daemon || true
cat /tmp/daemon.log
""".replace("TABLE", TABLE)

# map = socketmap in the directory the package made: the daemon as the unit
# runs it (user popbsmtp, not in group postfix) answers Postfix's own socketmap
# client run as smtpd runs (user postfix), then stops and takes its socket
# away.  Its own state directory: the lmdb table's grant is not touched.
SOCKETMAP_SERVES = r"""
printf '[popbsmtp]\nlogfile = /var/log/mail.log\nmap = SOCKETMAP\n' >/tmp/socketmap.conf
printf 'state_dir = /tmp/socketmap-state\n' >>/tmp/socketmap.conf
install -d -m 0700 -o popbsmtp -g popbsmtp /tmp/socketmap-state
setpriv --reuid popbsmtp --regid popbsmtp --groups adm \
    popbsmtp run --foreground --config /tmp/socketmap.conf 2>/tmp/socketmap.log &
daemon=$!
poll() { i=0; until "$@"; do i=$((i + 1)); [ $i -lt 200 ] || return 1; sleep 0.1; done; }
following() { grep -q "following " /tmp/socketmap.log; }
poll following || { cat /tmp/socketmap.log >&2; exit 1; }
stat -c '%U:%G %a' /run/popbsmtp/socketmap
login="imap-login: Login: user=<bob>, method=PLAIN, rip=192.0.2.12, lip=192.0.2.1"
login="$login, mpid=3220, session=<Uv6Lxjth/YF/AAAG>"
echo "$(date -u +%Y-%m-%dT%H:%M:%S.000000+00:00) mail dovecot: $login" >>/var/log/mail.log
as_smtpd() { setpriv --reuid postfix --regid postfix --init-groups "$@"; }
poll as_smtpd postmap -q 192.0.2.12 SOCKETMAP >/dev/null || { cat /tmp/socketmap.log >&2; exit 1; }
echo "smtpd asks: $(as_smtpd postmap -q 192.0.2.12 SOCKETMAP)"
kill -TERM $daemon
wait $daemon
test ! -e /run/popbsmtp/socketmap && echo "socket removed"
""".replace("SOCKETMAP", SOCKETMAP)


def tool(name: str) -> str:
    path = shutil.which(name, path=SYSTEM_PATH)
    if path is None:
        raise AssertionError(f"{name} is not installed; run .ci/setup")
    return path


@pytest.fixture(scope="module")
def debs(tmp_path_factory) -> Dict[str, Path]:
    """Two builds of this checkout: the package's own version and a later one."""
    out = tmp_path_factory.mktemp("debs")
    built: Dict[str, Path] = {}
    for version in (FIRST, SECOND):
        result = subprocess.run(
            [str(BUILD), str(out), "--version", version],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        built[version] = out / f"popbsmtp_{version}_all.deb"
        assert result.stdout.strip() == str(built[version])
    return built


class Tree:
    """The cached Debian 12 tree, seen through an overlay of this test's own."""

    def __init__(self, scratch: Path, debs: Path) -> None:
        if not (TREE / ".complete").exists():
            raise AssertionError(f"no Debian 12 tree in {TREE}; run .ci/setup")
        self.layers = [scratch / name for name in ("upper", "work", "merged")]
        for layer in self.layers:
            layer.mkdir()
        self.debs = debs

    def run(self, script: str) -> subprocess.CompletedProcess:
        command = [tool("unshare"), "--mount", "--pid", "--fork", "--propagation", "private"]
        command += ["/bin/sh", "-euc", ENTER, "enter", str(TREE), *map(str, self.layers)]
        command += [str(self.debs), script]
        env = {"PATH": SYSTEM_PATH, "HOME": "/root", "LC_ALL": "C.UTF-8"}
        env["DEBIAN_FRONTEND"] = "noninteractive"
        return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)

    def ok(self, script: str) -> str:
        result = self.run(script)
        assert result.returncode == 0, f"{script}\n{result.stdout}{result.stderr}"
        return result.stdout


def deb_field(deb: Path, field: str) -> str:
    return subprocess.run(
        [tool("dpkg-deb"), "-f", str(deb), field], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_package_is_architecture_all_with_debian_dependencies(debs):
    deb = debs[FIRST]
    assert deb_field(deb, "Architecture") == "all"
    assert deb_field(deb, "Version") == FIRST
    depends = {d.strip().split(" ")[0] for d in deb_field(deb, "Depends").split(",")}
    for package in ("postfix", "postfix-lmdb", "python3-watchdog", "python3-daemon"):
        assert package in depends
    for package in ("python3-lmdb", "python3-netaddr", "python3:any"):
        assert package in depends
    listing = subprocess.run(
        [tool("dpkg-deb"), "-c", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    files = {line.split()[-1].lstrip(".") for line in listing.splitlines()}
    for path in (
        "/usr/bin/popbsmtp",
        "/usr/lib/python3/dist-packages/popbsmtp/__init__.py",
        "/etc/popbsmtp/popbsmtp.conf",
        "/lib/systemd/system/popbsmtp.service",
        "/lib/systemd/system/popbsmtp.service.d/debian.conf",
        "/usr/lib/sysusers.d/popbsmtp.conf",
        "/usr/lib/tmpfiles.d/popbsmtp.conf",
        "/usr/share/man/man8/popbsmtp.8.gz",
        "/usr/share/man/man5/popbsmtp.conf.5.gz",
        "/usr/share/doc/popbsmtp/copyright",
    ):
        assert path in files, path
    assert not [f for f in files if f.endswith((".so", ".c"))]


def test_lintian_finds_no_errors_or_warnings(debs):
    """Overridden tags are justified in packaging/deb/README.md."""
    result = subprocess.run(
        [tool("lintian"), "--fail-on", "error,warning", *map(str, debs.values())],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [line for line in result.stdout.splitlines() if line.startswith(("E:", "W:"))]


def test_install_upgrade_remove_purge(debs, tmp_path):
    tree = Tree(tmp_path, debs[FIRST].parent)
    first, second = (f"/mnt/{debs[v].name}" for v in (FIRST, SECOND))

    # Install as docs/install.md says (apt, with nothing left to download):
    # the command, the user, the directories it may write, the conffile, and
    # the unit enabled as Debian users expect.
    assert "\n0 upgraded, 1 newly installed, 0 to remove" in tree.ok(f"apt-get install -y {first}")
    assert tree.ok("popbsmtp --version").strip() == f"popbsmtp {__version__}"
    user = tree.ok("getent passwd popbsmtp").strip().split(":")
    assert user[0] == "popbsmtp" and user[5:] == ["/var/lib/popbsmtp", "/usr/sbin/nologin"]
    owners = tree.ok("stat -c '%n %U:%G %a' /var/lib/popbsmtp /etc/postfix/popbsmtp")
    assert owners.splitlines() == [
        "/var/lib/popbsmtp popbsmtp:popbsmtp 700",
        "/etc/postfix/popbsmtp popbsmtp:popbsmtp 755",
    ]
    # The socketmap's directory: debhelper's postinst code ran systemd-tmpfiles
    # on the shipped tmpfiles.d file; at boot (/run is a tmpfs) the same call
    # makes it again.  The service user is not in group postfix: the setgid
    # bit is what gives the socket that group.
    made = "stat -c '%n %U:%G %a' /run/popbsmtp"
    assert tree.ok(made).strip() == "/run/popbsmtp popbsmtp:postfix 2750"
    shipped = (ROOT / "init" / "popbsmtp.tmpfiles").read_text()
    assert tree.ok("cat /usr/lib/tmpfiles.d/popbsmtp.conf") == shipped
    reboot = "rmdir /run/popbsmtp && systemd-tmpfiles --create popbsmtp.conf && " + made
    assert tree.ok(reboot).strip() == "/run/popbsmtp popbsmtp:postfix 2750"
    assert "postfix" not in tree.ok("id -Gn popbsmtp").split()
    assert tree.ok("dpkg-query -W -f '${Conffiles}' popbsmtp").split()[0] == (
        "/etc/popbsmtp/popbsmtp.conf"
    )
    enabled = "/etc/systemd/system/multi-user.target.wants/popbsmtp.service"
    assert tree.ok(f"readlink {enabled}").strip() == "/lib/systemd/system/popbsmtp.service"
    # The unit with Debian's drop-in, as systemd would load it.
    verify = tree.run("systemd-analyze verify --man=no popbsmtp.service")
    assert verify.returncode == 0 and "popbsmtp" not in verify.stderr, verify.stderr

    # Postfix installed with "No configuration": the first start stops with
    # EX_CONFIG (which the unit does not retry) and says what to do.
    start = tree.run("setpriv --reuid popbsmtp --regid popbsmtp --groups adm popbsmtp run -f")
    assert start.returncode == 78, start.stdout + start.stderr
    assert "/etc/postfix has no main.cf" in start.stderr

    # The admin configures Postfix as docs/install.md says and changes the
    # conffile; the packaged defaults pass check-config and let the daemon
    # write its table as the service user.
    tree.ok(
        "cp /usr/share/postfix/main.cf.debian /etc/postfix/main.cf && postconf -e "
        f"'smtpd_relay_restrictions = permit_mynetworks, check_client_access {TABLE}, "
        "defer_unauth_destination'"
    )
    tree.ok("echo 'grace = 10m' >>/etc/popbsmtp/popbsmtp.conf")
    assert "grace = 10m" in tree.ok("popbsmtp check-config --explain")
    assert "granted 192.0.2.11" in tree.ok(GRANT_THEN_CRASH)
    assert tree.ok(f"postmap -s {TABLE}").split() == ["192.0.2.11", "OK"]
    served = tree.ok(SOCKETMAP_SERVES).splitlines()
    assert served[0] == "popbsmtp:postfix 660"  # the socket, as smtpd needs it
    assert served[1:] == ["smtpd asks: OK", "socket removed"]

    # Upgrade: the changed conffile stays as the admin left it, without a
    # .dpkg-dist beside it; an upgrade withdraws nothing.
    tree.ok(f"dpkg -i {second}")
    assert tree.ok("dpkg-query -W -f '${Version}' popbsmtp") == SECOND
    assert tree.ok("cat /etc/popbsmtp/popbsmtp.conf").endswith("grace = 10m\n")
    assert tree.ok("ls /etc/popbsmtp").split() == ["conf.d", "popbsmtp.conf"]
    assert tree.ok(f"postmap -s {TABLE}").split() == ["192.0.2.11", "OK"]

    # Remove: the command goes, the conffile and the state stay, and the
    # grant the crashed daemon left in Postfix's table is withdrawn.
    tree.ok("dpkg -r popbsmtp")
    assert tree.run("command -v popbsmtp").returncode != 0
    tree.ok("test -f /etc/popbsmtp/popbsmtp.conf && test -s /var/lib/popbsmtp/state.json")
    table = tree.ok(f"postmap -s {TABLE}")

    # Purge: the conffile, the state and the table go, with a word about the
    # restriction that still names the table; the user stays (Debian keeps
    # system users, packaging/deb/README.md).
    purge = tree.run("dpkg -P popbsmtp")
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert "main.cf still names a table in /etc/postfix/popbsmtp" in purge.stderr
    for path in ("/etc/popbsmtp", "/var/lib/popbsmtp", "/etc/postfix/popbsmtp", "/run/popbsmtp"):
        assert tree.run(f"test -e {path}").returncode != 0, path
    enabled = "/etc/systemd/system/multi-user.target.wants/popbsmtp.service"
    assert tree.run(f"test -L {enabled}").returncode != 0
    status = tree.run("dpkg-query -W -f '${Status}' popbsmtp")
    assert status.returncode != 0 or status.stdout.endswith(" not-installed"), status.stdout
    assert tree.ok("getent passwd popbsmtp").startswith("popbsmtp:")

    assert table == "", f"a removed package left grants in Postfix's table: {table}"
