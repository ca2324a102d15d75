"""What a wrong grant is, shared by the hypothesis tests and the atheris target.

Two oracles: (1) whatever a line says, a Login's address is either None or a
normalised full host key that is never unspecified, broadcast, multicast or
``unknown``; (2) in a genuine example line whose user-controlled field
(the rule's ``{user}`` group) is replaced by hostile text, the address is
either the one the server wrote or nothing -- never one the user typed.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import List, Optional

from popbsmtp.parse.addresses import postfix_key
from popbsmtp.parse.envelope import EnvelopeParser
from popbsmtp.parse.matcher import Login, Matcher
from popbsmtp.profiles import registry

ATTACKER = "6.6.6.6"
NOW = time.time()
FORBIDDEN = {"0.0.0.0", "::", "255.255.255.255", "unknown", ""}


def all_profiles_matcher(max_line_length: int = 8192) -> Matcher:
    return Matcher(list(registry().values()), EnvelopeParser("auto"), max_line_length)


@dataclass(frozen=True)
class Genuine:
    """A positive example cut around its user field: ``head + user + tail``."""

    profile: str
    head: str
    user: str
    tail: str
    ip: str

    def with_user(self, user: str) -> str:
        return self.head + user + self.tail


def genuine_lines() -> List[Genuine]:
    """Every positive example of every profile whose rule has a ``{user}`` group."""
    matcher = all_profiles_matcher()
    found: List[Genuine] = []
    for profile in registry().values():
        for example in profile.examples:
            if example.ip is None or example.event != "login":
                continue
            envelope = matcher.parser.parse(example.line, NOW)
            assert envelope is not None, example.line
            offset = len(example.line) - len(envelope.message)
            for rule in profile.rules:
                hit = rule.regex.fullmatch(envelope.message)
                if hit is None or "user" not in hit.groupdict() or hit.start("user") < 0:
                    continue
                start, end = offset + hit.start("user"), offset + hit.end("user")
                line = example.line
                found.append(
                    Genuine(profile.name, line[:start], line[start:end], line[end:], example.ip)
                )
                break
    return found


def forged_tails(genuine: Genuine) -> List[str]:
    """The example's own server-written tail with the attacker's address in it."""
    tail = genuine.tail.replace(genuine.ip, ATTACKER)
    return [tail, tail + genuine.head[-12:], f" rip={ATTACKER}, ", f"[{ATTACKER}]", f"<{ATTACKER}>"]


def check_login(login: Optional[Login]) -> None:
    """Oracle 1: a Login never carries anything but one valid host key."""
    if login is None or login.ip is None:
        return
    ip = login.ip
    assert ip not in FORBIDDEN, ip
    assert postfix_key(ip) == ip, ip
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    packed = socket.inet_pton(family, ip)
    assert socket.inet_ntop(family, packed) == ip
    if family == socket.AF_INET:
        assert packed[0] != 0 and not 224 <= packed[0] <= 239, ip
    else:
        assert packed[0] != 0xFF, ip


def check_genuine(genuine: Genuine, login: Optional[Login]) -> None:
    """Oracle 2: hostile user text never moves the granted address."""
    check_login(login)
    if login is not None and login.ip is not None:
        assert login.ip == genuine.ip, (genuine.profile, login.ip)
