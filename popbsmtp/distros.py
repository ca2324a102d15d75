"""Per-distribution defaults, as data: where the mail log lives and its format.

Chosen from ``/etc/os-release`` (``ID`` then ``ID_LIKE``).  Debian 12+ and
Ubuntu 24.04+ rsyslog write RFC 3339 timestamps; older releases and RHEL
write the traditional BSD format.  ``auto`` log formats accept both anyway;
this only picks the log path and the documented expectation.
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


def _log_format(family: str, ident: str, info: Dict[str, str]) -> str:
    version = info.get("VERSION_ID", "")
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
    if ident == "debian" and major >= 12:
        return "rfc3339"
    if ident == "ubuntu" and major >= 24:
        return "rfc3339"
    return "rfc3164"
