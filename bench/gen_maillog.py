#!/usr/bin/env python3
"""Write a deterministic, realistic mail log for the benchmarks.

Postfix smtpd/cleanup/qmgr/smtp noise with, at a chosen rate, successful
POP/IMAP logins drawn from a fixed pool of client addresses, failed logins
and logouts.  Login lines use exactly the shapes of the example lines that
ship with each server profile (``popbsmtp/profiles/*.py``): the example's
timestamp and client address are replaced, nothing else.  The same arguments
always give the same bytes.  This is a benchmark input, not a test fixture.

    gen_maillog.py OUT --lines 1000000 [--seed 1] [--style rfc3339|bsd]
                       [--end EPOCH] [--span SECONDS] [--login-rate 0.02]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import re
import sys
import time
from dataclasses import dataclass
from typing import Iterator, List, Sequence

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from popbsmtp.profiles import LOGIN, LOGOUT, Example, registry  # noqa: E402

_STAMP = re.compile(
    r"^(?:[A-Z][a-z]{2} [ 0-9][0-9] [0-9:]{8}(?:\.[0-9]+)?"
    r"|[0-9]{4}-[0-9]{2}-[0-9]{2}T[^ ]+) "
)


@dataclass(frozen=True)
class Template:
    """An example line split around its client address: ``head + ip + tail``."""

    head: str
    tail: str
    ipv6: bool


def templates(event: str) -> List[Template]:
    """Example lines of every profile for ``event`` with exactly one address to swap.

    Annotated examples (injection attempts, mapped addresses) are left out:
    they are there to test the rules, not to look like a normal day's log.
    """
    found = []
    for profile in registry().values():
        for example in profile.examples:
            template = _template(example, event)
            if template is not None:
                found.append(template)
    return found


def _template(example: Example, event: str) -> Template | None:
    if example.ip is None or example.event != event or example.note:
        return None
    stamp = _STAMP.match(example.line)
    if stamp is None:
        return None
    rest = example.line[stamp.end() :]
    if rest.count(example.ip) != 1 or rest.count("::ffff:"):
        return None
    head, tail = rest.split(example.ip)
    return Template(head, tail, ":" in example.ip)


def failed_logins() -> List[str]:
    """Negative examples that are plain failed logins (still prefilter candidates)."""
    lines = []
    for profile in registry().values():
        for example in profile.examples:
            stamp = _STAMP.match(example.line)
            if example.ip is None and "failed" in example.note and stamp:
                lines.append(example.line[stamp.end() :])
    return lines


# Postfix noise as a busy relay writes it; none contains a profile needle.
_NOISE = (
    "mail postfix/smtpd[{pid}]: connect from unknown[{ip}]",
    "mail postfix/smtpd[{pid}]: {qid}: client=unknown[{ip}]",
    "mail postfix/cleanup[{pid}]: {qid}: message-id=<{qid}.{pid}@example.org>",
    "mail postfix/qmgr[{pid}]: {qid}: from=<user{pid}@example.org>, size={size}, nrcpt=1 "
    "(queue active)",
    "mail postfix/smtp[{pid}]: {qid}: to=<rcpt{pid}@example.net>, relay=mx.example.net"
    "[203.0.113.25]:25, delay=0.{pid}, delays=0.1/0/0.2/0.3, dsn=2.0.0, status=sent "
    "(250 2.0.0 Ok: queued as {qid}X)",
    "mail postfix/qmgr[{pid}]: {qid}: removed",
    "mail postfix/smtpd[{pid}]: disconnect from unknown[{ip}] ehlo=1 mail=1 rcpt=1 data=1 "
    "quit=1 commands=5",
    "mail postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from unknown[{ip}]: 454 4.7.1 "
    "<x@example.com>: Relay access denied; from=<s@example.org> to=<x@example.com> "
    "proto=ESMTP helo=<client>",
)
# Logouts the profiles do not ship examples for (they match no login rule).
_LOGOUTS = (
    "mail dovecot: imap(user{pid})<{pid}><AbCdEfGh12>: Logged out in=123 out=4567 deleted=0 "
    "expunged=0 trashed=0 hdr_count=0 hdr_bytes=0 body_count=0 body_bytes=0",
    "mail dovecot: pop3(user{pid})<{pid}><AbCdEfGh12>: Disconnected: Logged out top=0/0, "
    "retr=1/2345, del=1/1, size=2345",
    "mail ipop3d[{pid}]: Logout user=user{pid} host=client.example.com [{ip}] nmsgs=1 ndele=1",
    "mail imapd[{pid}]: Logout user=user{pid} host=client.example.com [{ip}]",
)


def client_pool(count: int, rng: random.Random) -> List[str]:
    """``count`` distinct addresses: nine in ten IPv4, the rest IPv6."""
    base4 = int(ipaddress.IPv4Address("10.0.0.0"))
    base6 = int(ipaddress.IPv6Address("2001:db8::"))
    picks = rng.sample(range(1, 1 << 22), count)
    return [
        str(ipaddress.IPv6Address(base6 + n))
        if i % 10 == 9
        else str(ipaddress.IPv4Address(base4 + n))
        for i, n in enumerate(picks)
    ]


def stamp_text(stamp: float, style: str) -> str:
    if style == "bsd":
        return time.strftime("%b %e %H:%M:%S", time.localtime(stamp))
    micro = int(stamp * 1_000_000) % 1_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{micro:06d}+00:00"


class Generator:
    def __init__(self, seed: int, login_rate: float, clients: int) -> None:
        self.rng = random.Random(seed)
        self.login_rate = login_rate
        pool = client_pool(clients, self.rng)
        self.v4 = [ip for ip in pool if ":" not in ip]
        self.v6 = [ip for ip in pool if ":" in ip]
        self.logins = templates(LOGIN)
        self.logouts = templates(LOGOUT)
        self.failed = failed_logins()
        if not self.logins:
            raise SystemExit("no profile ships a usable login example")

    def message(self) -> str:
        """One line without its timestamp."""
        rng = self.rng
        roll = rng.random()
        if roll < self.login_rate:
            template = rng.choice(self.logins)
            ip = rng.choice(self.v6 if template.ipv6 and self.v6 else self.v4)
            return template.head + ip + template.tail
        fields = {
            "pid": rng.randrange(1000, 65000),
            "qid": f"{rng.getrandbits(40):010X}",
            "ip": f"198.51.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            "size": rng.randrange(500, 90000),
        }
        if roll < self.login_rate * 1.5:
            if self.logouts and rng.random() < 0.5:
                template = rng.choice(self.logouts)
                return template.head + rng.choice(self.v4) + template.tail
            return rng.choice(_LOGOUTS).format(**fields)
        if roll < self.login_rate * 1.75 and self.failed:
            return rng.choice(self.failed)
        return rng.choice(_NOISE).format(**fields)

    def lines(self, count: int, end: float, span: float, style: str) -> Iterator[str]:
        start = end - span
        step = span / max(count, 1)
        last_second = -1
        prefix = ""
        for n in range(count):
            stamp = start + n * step
            if style == "bsd":
                # Same second, same text: formatting it once per second is the cost that matters.
                if int(stamp) != last_second:
                    last_second = int(stamp)
                    prefix = stamp_text(stamp, style)
                yield prefix + " " + self.message() + "\n"
            else:
                yield stamp_text(stamp, style) + " " + self.message() + "\n"


def write(path: str, lines: Iterator[str]) -> int:
    size = 0
    with open(path, "w", encoding="utf-8", buffering=1 << 20) as out:
        batch: List[str] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= 10000:
                size += out.write("".join(batch))
                batch.clear()
        size += out.write("".join(batch))
    return size


def generator_parser(description: str) -> argparse.ArgumentParser:
    """The options every log generator takes (gen_dovecot.py adds its own)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("out")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--style", choices=("rfc3339", "bsd"), default="rfc3339")
    parser.add_argument("--end", type=float, default=None, help="last line's time (default now)")
    parser.add_argument("--span", type=float, default=1200.0, help="seconds the log covers")
    parser.add_argument("--login-rate", type=float, default=0.02)
    parser.add_argument("--clients", type=int, default=10_000, help="distinct client addresses")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    return generator_parser(__doc__.split("\n\n")[0]).parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    end = float(int(time.time())) if args.end is None else args.end
    gen = Generator(args.seed, args.login_rate, args.clients)
    size = write(args.out, gen.lines(args.lines, end, args.span, args.style))
    print(f"{args.out}: {args.lines} lines, {size} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
