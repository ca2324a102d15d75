"""What a wrong grant is, shared by the hypothesis tests and the atheris target.

Two oracles on log lines: (1) whatever a line says, a Login's address is
either None or a normalised full host key that is never unspecified,
broadcast, multicast or ``unknown``; (2) in a genuine example line whose
user-controlled field (the rule's ``{user}`` group) is replaced by hostile
text, the address is either the one the server wrote or nothing -- never
one the user typed.  Three on what else the daemon reads: (3) a control
request is applied only as checked, else set aside, never left queued;
(4) a state file loads as valid grants and position, else is set aside;
(5) a config value parses to a bounded value or a short error.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

from popbsmtp.parse.addresses import postfix_key
from popbsmtp.parse.envelope import EnvelopeParser
from popbsmtp.parse.matcher import Login, Matcher
from popbsmtp.profiles import registry

ATTACKER = "6.6.6.6"
NOW = time.time()
FORBIDDEN = {"0.0.0.0", "::", "255.255.255.255", "unknown", ""}


# A server's own log file is read only when log_format names it (never by auto).
OWN_LOGS = ("dovecot", "qpopper", "apple")
_MATCHERS: Dict[str, Matcher] = {}


def all_profiles_matcher(max_line_length: int = 8192, log_format: str = "auto") -> Matcher:
    return Matcher(list(registry().values()), EnvelopeParser(log_format), max_line_length)


def matcher_for(log_format: str) -> Matcher:
    """The all-profiles matcher reading ``log_format`` (one per format, kept)."""
    if log_format not in _MATCHERS:
        _MATCHERS[log_format] = all_profiles_matcher(log_format=log_format)
    return _MATCHERS[log_format]


def log_format_of(line: str) -> str:
    """The log_format a real example line is read with: auto, else its own log's."""
    for name in ("auto", *OWN_LOGS):
        if EnvelopeParser(name).parse(line, NOW) is not None:
            return name
    raise AssertionError(f"no format reads {line!r}")


@dataclass(frozen=True)
class Genuine:
    """A positive example cut around its user field: ``head + user + tail``."""

    profile: str
    head: str
    user: str
    tail: str
    ip: str
    log_format: str = "auto"

    def with_user(self, user: str) -> str:
        return self.head + user + self.tail


def genuine_lines() -> List[Genuine]:
    """Every positive example of every profile whose rule has a ``{user}`` group."""
    found: List[Genuine] = []
    for profile in registry().values():
        for example in profile.examples:
            if example.ip is None or example.event != "login":
                continue
            log_format = log_format_of(example.line)
            envelope = EnvelopeParser(log_format).parse(example.line, NOW)
            assert envelope is not None, example.line
            offset = len(example.line) - len(envelope.message)
            for rule in profile.rules:
                hit = rule.regex.fullmatch(envelope.message)
                if hit is None or "user" not in hit.groupdict() or hit.start("user") < 0:
                    continue
                start, end = offset + hit.start("user"), offset + hit.end("user")
                line = example.line
                found.append(
                    Genuine(
                        profile.name,
                        line[:start],
                        line[start:end],
                        line[end:],
                        example.ip,
                        log_format,
                    )
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


# -- files and values an administrator (or an attacker with a foothold) writes --


def check_control_request(state_dir: str, data: bytes) -> None:
    """Oracle 3: a queued request is applied as checked, or set aside; never raises,
    never stays queued to be retried."""
    from popbsmtp.config.values import MAX_DURATION
    from popbsmtp.grants import control

    spool = control.spool_dir(state_dir)
    os.makedirs(spool, mode=0o700, exist_ok=True)
    path = os.path.join(spool, "req-00000000000000000001-1.json")
    with open(path, "wb") as handle:
        handle.write(data)
    found = control.pending(state_dir)
    if found:
        [(where, request)] = found
        assert where == path and request["op"] in control.OPS
        if request["op"] in ("add", "remove"):
            assert postfix_key(request["ip"]) == request["ip"]
        grace = request.get("grace")
        assert grace is None or 0 <= grace <= MAX_DURATION
        os.unlink(path)
    else:
        assert not os.path.exists(path), "a bad request left queued"
    for name in os.listdir(spool):
        os.unlink(os.path.join(spool, name))


def check_state_file(state_dir: str, data: bytes) -> None:
    """Oracle 4: a state file loads as valid grants and position, or is set aside."""
    from popbsmtp.grants.state import StateFile

    state = StateFile(state_dir)
    with open(state.path, "wb") as handle:
        handle.write(data)
    snap = state.load()
    for ip, expires, profile, rule in snap.grants:
        assert postfix_key(ip) == ip and math.isfinite(expires)
        assert isinstance(profile, str) and isinstance(rule, str)
    if snap.position is not None:
        position = snap.position
        assert 0 <= position.offset < 2**63 and 0 <= position.head_len <= 256
    assert snap.saved is None or math.isfinite(snap.saved)
    loaded = os.path.exists(state.path)
    assert loaded or not (list(snap.grants) or snap.position), "set aside but used"
    for name in os.listdir(state_dir):
        os.unlink(os.path.join(state_dir, name))


def check_config_value(name: str, text: str) -> None:
    """Oracle 5: an option's value parses to a bounded value or a short ValueError."""
    from popbsmtp.config import BY_NAME
    from popbsmtp.config.values import MAX_DURATION, MAX_WHOLE

    try:
        value = BY_NAME[name].parse(text)
    except ValueError as exc:
        assert len(str(exc)) < 400, "an error quotes the whole value"
        return
    if isinstance(value, float):
        assert 0 < value <= MAX_DURATION
    elif isinstance(value, int):
        assert 0 <= value <= MAX_WHOLE or name == "map_mode"
