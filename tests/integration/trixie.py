"""Debian 13 (trixie) trees for the real-server tests, and the runner that starts a
program inside one.

The test machine runs Debian 12; Debian 13's Dovecot 2.4, Cyrus 3.10 and Courier 5.2
need trixie's libraries (2.4's ICU wants glibc 2.38), so they run chrooted in a tree
that `debootstrap` built.  `build()` (run by .ci/setup as ``python3
tests/integration/trixie.py``) makes, once, under :data:`CACHE`:

- ``trixie``: minbase with Dovecot 2.4 (core, pop3d, imapd), rsyslog, python3,
  openssl and procps;
- ``trixie-cyrus`` and ``trixie-courier``: copies of it with Cyrus or Courier
  installed by apt-get inside (both conflict with Dovecot's imap-server and
  pop3-server, so each has its own tree; a copy and an install are faster than a
  second debootstrap).

Each tree is built under a temporary name and marked complete last, so a broken build is
redone and a finished one is never touched again.  Tests never write into a tree:
`command()` starts a program in a private mount namespace (tmpfs ``/dev`` with a few
bound device nodes, ``proc``, tmpfs ``/run`` and ``/tmp``), binds the test's own
directories at the same paths inside, and chroots.  Mounts vanish with the namespace's
last process.  Nothing here is a pytest fixture; nothing touches the host's services.

The servers themselves: ``DovecotServer(work, version="2.4")`` (dovecot_server.py;
with ``dev_log=SOCKET`` it starts no rsyslogd and logs to that unix socket, a
journald's say), ``Cyrus310Server`` and ``Courier52Server``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

CACHE = Path(os.environ.get("POPBSMTP_TRIXIE_CACHE", "/var/cache/popbsmtp-ci"))
BASE_PACKAGES = ("dovecot-core", "dovecot-pop3d", "dovecot-imapd", "rsyslog", "python3",
                 "openssl", "procps")  # fmt: skip
# Tree name -> packages apt-get installs into a copy of the base tree ("" = the base).
TREES: Dict[str, Tuple[str, ...]] = {
    "trixie": (),
    "trixie-cyrus": ("cyrus-imapd", "cyrus-pop3d", "sasl2-bin"),
    "trixie-courier": (
        "courier-imap",
        "courier-pop",
        "courier-authdaemon",
        "courier-authlib-userdb",
    ),  # fmt: skip
}
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Directories a test may bind into a tree: they land on the tree's private tmpfs, so the
# mount points are made there and the cached tree itself is never written.
BINDABLE = ("/tmp/",)

# Runs as `sh -c SCRIPT sh ROOT DEVLOG HOSTS BIND... -- ARGV...` inside
# `unshare --mount --propagation private`; nothing it mounts is seen outside.
_CHROOT_SCRIPT = """\
set -eu
root="$1"; devlog="$2"; hosts="$3"; shift 3
mount -t tmpfs -o mode=0755,nosuid,size=256k trixie-dev "$root/dev"
for node in null zero full random urandom tty; do
    : > "$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
done
ln -s /proc/self/fd "$root/dev/fd"
mkdir -m 1777 "$root/dev/shm"
mount -t proc -o nosuid,nodev,noexec trixie-proc "$root/proc"
mount -t tmpfs -o mode=0755,nosuid trixie-run "$root/run"
mount -t tmpfs -o mode=1777,nosuid trixie-tmp "$root/tmp"
if [ -n "$devlog" ]; then
    : > "$root/dev/log"
    mount --bind "$devlog" "$root/dev/log"
fi
if [ -n "$hosts" ]; then
    mount --bind "$hosts" "$root/etc/hosts"
    mount --bind "$hosts.resolv" "$root/etc/resolv.conf"
fi
while [ "$1" != "--" ]; do
    mkdir -p "$root$1"
    mount --bind "$1" "$root$1"
    shift
done
shift
exec chroot "$root" "$@"
"""


def tree(name: str = "trixie") -> Path:
    """The root of a complete tree, or a loud error naming .ci/setup (never a skip)."""
    root = CACHE / name
    if not (root / ".complete").exists():
        raise RuntimeError(f"no Debian 13 tree in {root}: run .ci/setup as root")
    return root


def command(
    root: Path,
    argv: Sequence[str],
    *,
    binds: Iterable[Path] = (),
    dev_log: Optional[Path] = None,
    hosts: Optional[Path] = None,
) -> List[str]:
    """argv run chrooted in root, in a private mount namespace.

    binds: directories under /tmp, seen inside at the same path (configuration files
    written by the test keep their paths).  dev_log: a unix socket bound as the
    tree's /dev/log.  hosts: a file bound as /etc/hosts, with ``HOSTS.resolv`` as
    /etc/resolv.conf (servers that look up client names then get answers from files
    only).  Needs root.
    """
    paths = []
    for path in binds:
        text = str(Path(path).resolve())
        if not text.startswith(BINDABLE):
            raise ValueError(f"{text}: only directories under {BINDABLE} can be bound")
        paths.append(text)
    return ["unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", _CHROOT_SCRIPT, "sh", str(root), str(dev_log or ""), str(hosts or ""),
            *paths, "--", *argv]  # fmt: skip


def write_hosts(path: Path) -> Path:
    """An /etc/hosts naming only localhost, and a resolv.conf whose resolver is a closed
    loopback port: name lookups answer at once and never leave the machine."""
    path.write_text("127.0.0.1 localhost\n::1 localhost\n")
    Path(f"{path}.resolv").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    return path


# -- building ------------------------------------------------------------------------


def mirror(sources: Sequence[Path] = ()) -> str:
    """The Debian mirror this machine's apt uses (not its security or updates suites)."""
    files = list(sources) or [Path("/etc/apt/sources.list"),
                              *sorted(Path("/etc/apt/sources.list.d").glob("*"))]  # fmt: skip
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, re.M))
                suites = fields.get("Suites", "").split()
                if "deb" in fields.get("Types", "").split() and any("-" not in s for s in suites):
                    return fields.get("URIs", "").split()[0]
        elif path.suffix == ".list":
            for match in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", text, re.M):
                if "-" not in match.group(2):
                    return match.group(1)
    return DEFAULT_MIRROR


def _run(argv: List[str]) -> None:
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(argv[:4])}... failed:\n{result.stdout}{result.stderr}")


def _in_tree(root: Path, script: str) -> None:
    """script run by sh chrooted in root, with /proc mounted (apt and maintainer scripts)."""
    _run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
          'mount -t proc trixie-proc "$1/proc" && exec chroot "$1" sh -c "$2"',
          "sh", str(root), script])  # fmt: skip


def _build_one(name: str, packages: Tuple[str, ...], source: str) -> None:
    root, work = CACHE / name, CACHE / f"{name}.building"
    shutil.rmtree(work, ignore_errors=True)
    if not packages:
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
              "trixie", str(work), source])  # fmt: skip
        # No maintainer script ever starts a service in a tree.
        policy = work / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    else:
        _run(["cp", "-a", str(tree("trixie")), str(work)])
        (work / ".complete").unlink()
        install = f"apt-get install -y -qq --no-install-recommends {' '.join(packages)}"
        _in_tree(work, f"export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && {install}")
    _in_tree(work, "apt-get clean && rm -rf /var/lib/apt/lists/*")
    shutil.rmtree(root, ignore_errors=True)
    work.rename(root)
    (root / ".complete").touch()


def build(source: Optional[str] = None) -> None:
    """Make every tree in TREES that is not complete yet (the base first)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    source = source or mirror()
    for name, packages in TREES.items():
        if not (CACHE / name / ".complete").exists():
            print(f"building {CACHE / name} from {source}", file=sys.stderr)
            _build_one(name, packages, source)


if __name__ == "__main__":
    build(sys.argv[1] if len(sys.argv) > 1 else None)
