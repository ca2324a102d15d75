"""Per-distribution defaults, as data: where the mail log lives and its format.

``distro = auto`` reads ``/etc/os-release`` (``ID``, then ``ID_LIKE``);
``distro = NAME`` picks a family explicitly (a container or chroot whose
os-release is not the host's).  The table (a default install; the mail log
exists only where a syslog daemon writes it):

=================================  ==========  ===================  ========  =========
distribution                       syslog      mail log             envelope  auto reads
=================================  ==========  ===================  ========  =========
RHEL, CentOS, Alma, Rocky 8 to 10  rsyslog     /var/log/maillog     rfc3164   the file
Fedora                             none        (/var/log/maillog)   rfc3164   journal
Debian 12, 13                      none        (/var/log/mail.log)  rfc3339   journal
Debian 11 and older                rsyslog     /var/log/mail.log    rfc3164   the file
Ubuntu 24.04 and later             rsyslog     /var/log/mail.log    rfc3339   the file
older Ubuntu                       rsyslog     /var/log/mail.log    rfc3164   the file
SUSE, openSUSE, SLES               optional    (/var/log/mail)      rfc3164   either
FreeBSD                            syslogd     /var/log/maillog     rfc3164   the file
=================================  ==========  ===================  ========  =========

In parentheses: where the log is once rsyslog is installed (Debian 12 and
13 give it priority ``optional``, Fedora leaves it out).  ``logfile = auto``
with ``source = auto`` follows that file while it is being written and the
journal otherwise (:mod:`popbsmtp.sources.choice`), so the "auto reads"
column is what a default install gets; the distribution only decides which
file that is.

Only the log path becomes a default: ``log_format`` stays ``auto``, which
accepts every envelope (the distro's own is tried among the first), because
an admin who switches rsyslog's template should not lose logins silently.
The expected envelope is reported by ``check-config --explain`` via the
``logfile`` source text.  Nothing here reads the log itself.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Dict, Optional


@dataclass(frozen=True)
class Distro:
    id: str
    family: str
    logfile: str
    log_format: str


_FAMILIES: Dict[str, str] = {
    "rhel": "/var/log/maillog",
    "fedora": "/var/log/maillog",
    "freebsd": "/var/log/maillog",
    "debian": "/var/log/mail.log",
    "suse": "/var/log/mail",
}
_ALIASES = {
    "centos": "rhel",
    "almalinux": "rhel",
    "rocky": "rhel",
    "ol": "rhel",
    "amzn": "rhel",
    "ubuntu": "debian",
    "raspbian": "debian",
    "linuxmint": "debian",
    "opensuse": "suse",
    "opensuse-leap": "suse",
    "opensuse-tumbleweed": "suse",
    "sles": "suse",
}
KNOWN_DISTROS = tuple(sorted({*_FAMILIES, *_ALIASES}))


def read_os_release(path: str = "/etc/os-release") -> Dict[str, str]:
    data: Dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                key, sep, value = line.strip().partition("=")
                if sep and key:
                    parts = shlex.split(value) if value else [""]
                    data[key] = parts[0] if parts else ""
    except (OSError, ValueError):
        pass
    return data


def detect(path: str = "/etc/os-release") -> Distro:
    info = read_os_release(path)
    ident = info.get("ID", "").lower()
    candidates = [ident, *info.get("ID_LIKE", "").lower().split()]
    family: Optional[str] = None
    for name in candidates:
        name = _ALIASES.get(name, name)
        if name in _FAMILIES:
            family = name
            break
    if family is None:
        family = "debian"  # the most common; the log path is reported by check-config
    return Distro(ident or "unknown", family, _FAMILIES[family], _log_format(family, ident, info))


def distro_name(text: str) -> str:
    """Parse the ``distro`` option: ``auto`` or a known name (``ubuntu:24.04`` …)."""
    word = text.strip().lower()
    name = word.partition(":")[0]
    if word != "auto" and name not in KNOWN_DISTROS:
        raise ValueError(
            f"unknown distro {text.strip()[:40]!r}; known: auto, {', '.join(KNOWN_DISTROS)}"
        )
    return word


def named_distro(text: str) -> Distro:
    """The defaults for an explicit ``distro = NAME[:VERSION]``; ValueError if unknown."""
    word = distro_name(text)
    ident, _, version = word.partition(":")
    family = _ALIASES.get(ident, ident)
    info = {"VERSION_ID": version}
    return Distro(ident, family, _FAMILIES[family], _log_format(family, ident, info))


def _log_format(family: str, ident: str, info: Dict[str, str]) -> str:
    version = info.get("VERSION_ID", "")
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
    if ident == "debian" and major >= 12:
        return "rfc3339"
    if ident == "ubuntu" and major >= 24:
        return "rfc3339"
    return "rfc3164"
