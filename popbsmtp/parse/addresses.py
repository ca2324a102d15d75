"""Client addresses: parse what a server logged into the key smtpd looks up.

smtpd looks an IPv4 client up as dotted quad and an IPv6 client as glibc's
``inet_ntop()`` prints it; an IPv4-mapped IPv6 client is looked up as plain
IPv4 (docs/maps.md).  Anything that is not one full host address
(``unknown``, empty, a prefix, a zone id, a multicast or unspecified address)
is refused here, because a partial key would authorize a whole network.
This module does not decide *whether* an address may relay, only its key and
whether it falls into the ignored networks.
"""

from __future__ import annotations

import bisect
import ipaddress
import logging
import re
import socket
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

import netaddr

from popbsmtp import postfix
from popbsmtp.errors import ConfigError

log = logging.getLogger(__name__)

_MAX_TEXT = 64  # the longest IPv6 text form is 45 characters
_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"


class InvalidAddress(ValueError):
    """The text is not one usable client host address; ``str()`` says why."""


def postfix_key(text: str) -> str:
    """Return the lookup key smtpd uses for ``text`` or raise InvalidAddress.

    Only ASCII is accepted: ``inet_pton`` would otherwise see Unicode digits
    that no server writes.  IPv6 brackets (``[::1]``) are accepted because
    servers such as Cyrus and Courier write them.
    """
    if not text or len(text) > _MAX_TEXT or not text.isascii():
        raise InvalidAddress("not an IP address")
    if text[0] == "[" and text[-1] == "]":
        text = text[1:-1]
    if "%" in text:
        raise InvalidAddress("IPv6 zone ids are never client addresses")
    if "\0" in text:  # inet_pton would raise ValueError, not OSError
        raise InvalidAddress("not an IP address")
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
    except OSError:
        try:
            packed = socket.inet_pton(socket.AF_INET6, text)
        except OSError:
            raise InvalidAddress("not an IP address") from None
        if packed.startswith(_MAPPED_PREFIX):
            packed = packed[12:]
    return _check_host(packed)


def _check_host(packed: bytes) -> str:
    """Refuse addresses that can never be one SMTP client, then format."""
    if len(packed) == 4:
        if packed[0] == 0:
            raise InvalidAddress("0.0.0.0/8 is not a client address")
        if packed == b"\xff\xff\xff\xff":
            raise InvalidAddress("broadcast is not a client address")
        if 224 <= packed[0] <= 239:
            raise InvalidAddress("multicast is not a client address")
        return socket.inet_ntop(socket.AF_INET, packed)
    if packed == b"\x00" * 16:
        raise InvalidAddress(":: is not a client address")
    if packed[0] == 0xFF:
        raise InvalidAddress("multicast is not a client address")
    return socket.inet_ntop(socket.AF_INET6, packed)


def normalise(text: str) -> Optional[str]:
    """Like :func:`postfix_key` but returns None instead of raising."""
    try:
        return postfix_key(text)
    except InvalidAddress:
        return None


@dataclass(frozen=True)
class IgnoredNetworks:
    """Networks whose clients never enter the table (usually ``mynetworks``).

    They may relay anyway, so granting them only adds churn; ``describe``
    is what ``check-config --explain`` and ``doctor`` print.
    """

    networks: netaddr.IPSet
    describe: str
    # Sorted (first, last) integer ranges per address length: IPSet's own
    # membership test is far slower than a bisect (docs/benchmarks.md).
    _ranges: Dict[int, Tuple[List[int], List[int]]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        for iprange in self.networks.iter_ipranges():
            length = 4 if iprange.version == 4 else 16
            firsts, lasts = self._ranges.setdefault(length, ([], []))
            firsts.append(iprange.first)
            lasts.append(iprange.last)

    def __contains__(self, key: str) -> bool:
        packed = socket.inet_pton(socket.AF_INET6 if ":" in key else socket.AF_INET, key)
        if len(packed) not in self._ranges:
            return False
        firsts, lasts = self._ranges[len(packed)]
        value = int.from_bytes(packed, "big")
        index = bisect.bisect_right(firsts, value) - 1
        return index >= 0 and value <= lasts[index]

    @classmethod
    def none(cls) -> IgnoredNetworks:
        return cls(netaddr.IPSet(), "none")


def parse_networks(spec: str, *, postconf_dir: Optional[str] = None) -> IgnoredNetworks:
    """Parse ``ignore_networks``: CIDRs, addresses, files, ``mynetworks``, ``none``.

    ``mynetworks`` asks ``postconf -xh mynetworks`` (``-x`` expands ``$name``
    references) so the daemon agrees with the running Postfix.
    """
    cidrs: List[str] = []
    sources: List[str] = []
    for word in _words(spec):
        if word == "none":
            continue
        if word == "mynetworks":
            value = _postconf_mynetworks(postconf_dir)
            found, skipped = _collect(_words(value))
            cidrs += found
            sources.append(f"mynetworks = {value}" + (f" (skipped {skipped})" if skipped else ""))
        elif word.startswith("/"):
            cidrs += _read_file(word)
            sources.append(word)
        else:
            cidrs.append(_cidr(word))
            sources.append(word)
    return IgnoredNetworks(netaddr.IPSet(cidrs), "; ".join(sources) or "none")


def _words(value: str) -> List[str]:
    return [w for w in re.split(r"[\s,]+", value) if w]


def _cidr(word: str) -> str:
    """Accept ``1.2.3.0/24``, ``[2001:db8::]/32`` (Postfix style) and hosts."""
    text = re.sub(r"^\[([^\]]*)\]", r"\1", word)
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(f"{word!r} is not a network (CIDR) or address") from None
    return str(net)


def _collect(words: Iterable[str]) -> Tuple[List[str], List[str]]:
    """Keep what is a network; ``type:table`` entries cannot be expanded here."""
    found: List[str] = []
    skipped: List[str] = []
    for word in words:
        if word.startswith("/"):
            found += _read_file(word)
            continue
        try:
            found.append(_cidr(word))
        except ConfigError:
            skipped.append(word)
    return found, skipped


MAX_NETWORK_FILE = 1 << 20  # bytes: a list of networks, not a database


def _read_file(path: str) -> List[str]:
    """The networks listed in ``path``; errors name the file and line, never quote them.

    The file may be anything the admin (or a typo) names, e.g. /etc/shadow:
    the daemon's messages reach logs others read, so its content stays out.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_NETWORK_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read network list {path}: {exc.strerror}") from None
    if len(data) > MAX_NETWORK_FILE:
        raise ConfigError(f"network list {path} is larger than {MAX_NETWORK_FILE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"network list {path} is not UTF-8 text", key="ignore_networks") from None
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for word in _words(line.split("#", 1)[0]):
            try:
                found.append(_cidr(word))
            except ConfigError:
                raise ConfigError(
                    f"network list {path}:{number}: not a network (CIDR) or address "
                    "(the entry is not shown: the file may hold secrets)",
                    key="ignore_networks",
                ) from None
    return found


def _postconf_mynetworks(config_dir: Optional[str]) -> str:
    try:
        return postfix.parameter("mynetworks", config_dir)
    except postfix.PostfixError as exc:
        raise ConfigError(
            f"'mynetworks' needs Postfix's postconf ({exc}); "
            "list the networks explicitly or write 'none'",
            key="ignore_networks",
        ) from None
