#!/usr/bin/env python3
"""Write a deterministic, realistic Dovecot + Postfix mail log (a benchmark input).

The day of a small ISP's mail host as rsyslog writes it: Postfix traffic
(smtpd connects, SASL submissions, cleanup, qmgr, local and smtp
deliveries, rejects, anvil), Dovecot's auth noise (failed logins, TLS
handshakes that never log in, PAM failures, auth-worker lookups) and, at
``--login-rate``, successful POP3/IMAP logins.  Every login opens a session
of its own (a unique ``session=<…>`` id and ``mpid``) that its mail process
closes later with ``imap(user)<pid><id>: Disconnected: Logged out …``, as
Dovecot 2.3 logs them; a POP3 session lasts seconds, an IMAP one minutes.
Users log in from their own few addresses.  The same arguments always give
the same bytes.

    gen_dovecot.py OUT --lines 1000000 [--seed 1] [--style rfc3339|bsd]
                       [--end EPOCH] [--span SECONDS] [--login-rate 0.02]
"""

from __future__ import annotations

import argparse
import base64
import heapq
import ipaddress
import random
import sys
import time
from typing import Iterator, List, Sequence, Tuple

from gen_maillog import generator_parser, stamp_text, write

HOST = "mail"
LIP4 = "192.0.2.1"
LIP6 = "2001:db8:ffff::1"

# Postfix and Dovecot lines that are not successful logins or their logouts.
# Weights are per mille of these lines; fields are filled per line.
_TRAFFIC: Tuple[Tuple[int, str], ...] = (
    (90, "postfix/smtpd[{pid}]: connect from {rdns}[{peer}]"),
    (80, "postfix/smtpd[{pid}]: {qid}: client={rdns}[{peer}]"),
    (
        25,
        "postfix/submission/smtpd[{pid}]: {qid}: client={rdns}[{ip}], sasl_method=PLAIN, "
        "sasl_username={user}@example.org",
    ),
    (105, "postfix/cleanup[{pid}]: {qid}: message-id=<{qid}.{pid}@{rdns}>"),
    (
        105,
        "postfix/qmgr[{qpid}]: {qid}: from=<{user}@example.net>, size={size}, nrcpt=1 "
        "(queue active)",
    ),
    (
        70,
        "postfix/local[{pid}]: {qid}: to=<{user}@example.org>, relay=local, delay=0.{ms}, "
        "delays=0.1/0.01/0/0.02, dsn=2.0.0, status=sent (delivered to mailbox)",
    ),
    (
        35,
        "postfix/smtp[{pid}]: {qid}: to=<rcpt{pid}@example.com>, relay=mx.example.com"
        "[203.0.113.25]:25, delay=0.{ms}, delays=0.1/0/0.2/0.3, dsn=2.0.0, status=sent "
        "(250 2.0.0 Ok: queued as {qid2})",
    ),
    (105, "postfix/qmgr[{qpid}]: {qid}: removed"),
    (
        90,
        "postfix/smtpd[{pid}]: disconnect from {rdns}[{peer}] ehlo=1 mail=1 rcpt=1 data=1 "
        "quit=1 commands=5",
    ),
    (
        40,
        "postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from {rdns}[{peer}]: 554 5.7.1 "
        "<x{pid}@example.com>: Relay access denied; from=<s{pid}@example.net> "
        "to=<x{pid}@example.com> proto=ESMTP helo=<{rdns}>",
    ),
    (30, "postfix/smtpd[{pid}]: lost connection after AUTH from {rdns}[{peer}]"),
    (
        20,
        "postfix/smtpd[{pid}]: warning: {rdns}[{peer}]: SASL LOGIN authentication failed: "
        "UGFzc3dvcmQ6",
    ),
    (
        15,
        "postfix/anvil[{qpid}]: statistics: max connection rate 3/60s for (smtp:{peer}) at "
        "Dec  5 01:02:03",
    ),
    (
        20,
        "dovecot: imap-login: Disconnected: Aborted login by logging out (auth failed, 1 "
        "attempts in 2 secs): user=<{user}>, method=PLAIN, rip={ip}, lip={lip}, TLS, "
        "session=<{sid}>",
    ),
    (
        15,
        "dovecot: pop3-login: Disconnected: Connection closed (no auth attempts in 0 secs): "
        "user=<>, rip={peer}, lip={lip4}, TLS handshaking: SSL_accept() failed: error:0A000416:SSL "
        "routines::sslv3 alert certificate unknown: SSL alert number 46, session=<{sid}>",
    ),
    (
        15,
        "dovecot: auth: pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 "
        "tty=dovecot ruser={user} rhost={ip}",
    ),
    (10, "dovecot: auth-worker({qpid}): pam({user},{ip},<{sid}>): Password mismatch"),
    (
        10,
        "dovecot: imap-login: Disconnected: Connection closed (no auth attempts in 5 secs): "
        "user=<>, rip={peer}, lip={lip4}, session=<{sid}>",
    ),
    (
        2,
        "dovecot: master: Warning: service(imap-login): process_limit (100) reached, client "
        "connections are being dropped",
    ),
    (
        55,
        "postfix/smtpd[{pid}]: {qid}: reject: RCPT from {rdns}[{peer}]: 450 4.7.1 "
        "<mx.{rdns}>: Helo command rejected: Host not found; proto=ESMTP helo=<mx.{rdns}>",
    ),
)
_IMAP_OUT = (
    "imap({user})<{mpid}><{sid}>: Disconnected: Logged out in={a} out={b} deleted=0 expunged=0 "
    "trashed=0 hdr_count=0 hdr_bytes=0 body_count=0 body_bytes=0"
)
_POP3_OUT = (
    "pop3({user})<{mpid}><{sid}>: Disconnected: Logged out top=0/0, retr={n}/{b}, del={n}/{n}, "
    "size={b}"
)


def client_pool(count: int, ipv6_share: float, rng: random.Random) -> List[str]:
    """``count`` distinct client addresses, ``ipv6_share`` of them IPv6."""
    base4 = int(ipaddress.IPv4Address("10.0.0.0"))
    base6 = int(ipaddress.IPv6Address("2001:db8::"))
    picks = rng.sample(range(1, 1 << 22), count)
    six = round(count * ipv6_share)
    return [
        str(ipaddress.IPv6Address(base6 + n)) if i < six else str(ipaddress.IPv4Address(base4 + n))
        for i, n in enumerate(picks)
    ]


class Generator:
    """Log lines without timestamps, in order; sessions kept in a heap of due lines."""

    def __init__(
        self, seed: int, login_rate: float, clients: int, users: int, ipv6_share: float
    ) -> None:
        self.rng = random.Random(seed)
        self.login_rate = login_rate
        pool = client_pool(clients, ipv6_share, self.rng)
        # Each user logs in from one to three addresses of its own (home, office, phone).
        self.homes = [
            [pool[self.rng.randrange(len(pool))] for _ in range(self.rng.choice((1, 1, 2, 3)))]
            for _ in range(users)
        ]
        weights = [w for w, _ in _TRAFFIC]
        self.traffic = [t for _, t in _TRAFFIC]
        self.cumulative = [sum(weights[: i + 1]) for i in range(len(weights))]
        self.mpid = 20000
        self.pending: List[Tuple[int, int, str]] = []  # (due line, order, logout text)
        self.order = 0
        self.qpid = 1042

    def session_id(self, ipv6: bool) -> str:
        """Dovecot's session id: base64 of 9 random bytes (+ the client address bytes)."""
        raw = self.rng.getrandbits(96 if not ipv6 else 192).to_bytes(12 if not ipv6 else 24, "big")
        return base64.b64encode(raw).decode().rstrip("=")

    def login(self, n: int, total: int) -> str:
        rng = self.rng
        user = rng.randrange(len(self.homes))
        ip = rng.choice(self.homes[user])
        v6 = ":" in ip
        sid = self.session_id(v6)
        self.mpid = self.mpid + rng.randrange(1, 40)
        if self.mpid > 4_000_000:
            self.mpid = 20000
        pop3 = rng.random() < 0.35
        # POP3 fetches and leaves; IMAP clients stay (IDLE) for minutes.
        lines = int(rng.expovariate(1 / (800 if pop3 else 30000))) + 1
        due = min(n + lines, total - 1)
        fields = {"user": f"user{user}", "mpid": self.mpid, "sid": sid}
        if pop3:
            text = _POP3_OUT.format(n=rng.randrange(5), b=rng.randrange(100, 90000), **fields)
        else:
            text = _IMAP_OUT.format(a=rng.randrange(50, 900), b=rng.randrange(400, 90000), **fields)
        self.order += 1
        heapq.heappush(self.pending, (due, self.order, f"{HOST} dovecot: {text}"))
        security = rng.choice(("TLS", "TLS", "secured")) if not v6 else "TLS"
        return (
            f"{HOST} dovecot: {'pop3' if pop3 else 'imap'}-login: Login: user=<user{user}>, "
            f"method=PLAIN, rip={ip}, lip={LIP6 if v6 else LIP4}, mpid={self.mpid}, "
            f"{security}, session=<{sid}>"
        )

    def noise(self) -> str:
        rng = self.rng
        pick = rng.randrange(self.cumulative[-1])
        index = next(i for i, c in enumerate(self.cumulative) if pick < c)
        user = rng.randrange(len(self.homes))
        pid = rng.randrange(1000, 65000)
        if rng.random() < 0.01:
            self.qpid += 1
        ip = rng.choice(self.homes[user])
        return f"{HOST} " + self.traffic[index].format(
            pid=pid,
            qpid=self.qpid,
            qid=f"{rng.getrandbits(40):010X}",
            qid2=f"{rng.getrandbits(40):010X}",
            peer=f"198.51.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            rdns=f"host{rng.randrange(1, 9999)}.example.net",
            ip=ip,
            lip=LIP6 if ":" in ip else LIP4,
            lip4=LIP4,
            user=f"user{user}",
            size=rng.randrange(500, 90000),
            ms=rng.randrange(10, 999),
            sid=self.session_id(False),
        )

    def messages(self, total: int) -> Iterator[str]:
        pending = self.pending
        for n in range(total):
            # A logout that is due, or one that must come now for every session
            # to end within the file.
            if pending and (pending[0][0] <= n or len(pending) >= total - n):
                yield heapq.heappop(pending)[2]
            elif self.rng.random() < self.login_rate:
                yield self.login(n, total)
            else:
                yield self.noise()


def lines(gen: Generator, count: int, end: float, span: float, style: str) -> Iterator[str]:
    start = end - span
    step = span / max(count, 1)
    for n, message in enumerate(gen.messages(count)):
        yield stamp_text(start + n * step, style) + " " + message + "\n"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = generator_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=6_000)
    parser.add_argument("--ipv6-share", type=float, default=0.1, help="of the client addresses")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    end = float(int(time.time())) if args.end is None else args.end
    gen = Generator(args.seed, args.login_rate, args.clients, args.users, args.ipv6_share)
    size = write(args.out, lines(gen, args.lines, end, args.span, args.style))
    print(f"{args.out}: {args.lines} lines, {size} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
