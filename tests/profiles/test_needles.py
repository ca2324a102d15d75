"""The prefilter's needles: present in every line a rule matches, absent from Postfix's lines.

A needle missing from a genuine line loses that login; a needle common in
Postfix's own lines makes a large share of a busy log "candidates" that each
cost an envelope parse (see docs/benchmarks.md).  Both are checked here
against every profile, the benchmark generator's noise and a set of
Postfix smtpd/cleanup/qmgr/smtp/local lines as Postfix 3.7 writes them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import List

import pytest

from popbsmtp.parse.matcher import Matcher
from popbsmtp.profiles import registry, select

ROOT = Path(__file__).resolve().parents[2]
S = "2026-11-27T05:58:13.516682+00:00 mail postfix/"
POSTFIX_LINES = [
    S + "smtpd[1201]: connect from mail-ed1-f54.google.com[209.85.208.54]",
    S + "smtpd[1201]: connect from unknown[198.51.100.7]",
    S + "smtpd[1201]: Anonymous TLS connection established from unknown[198.51.100.7]: "
    "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
    S + "smtpd[1201]: 4Q1xYz3kLmz9sWq: client=unknown[198.51.100.7], sasl_method=PLAIN, "
    "sasl_username=alice@example.org",
    S + "smtpd[1201]: NOQUEUE: reject: RCPT from unknown[198.51.100.7]: 554 5.7.1 "
    "<x@example.com>: Relay access denied; from=<s@example.org> to=<x@example.com> "
    "proto=ESMTP helo=<client>",
    S + "smtpd[1201]: NOQUEUE: reject: RCPT from unknown[198.51.100.7]: 550 5.1.1 "
    "<nobody@example.org>: Recipient address rejected: User unknown in local recipient "
    "table; from=<s@example.net> to=<nobody@example.org> proto=ESMTP helo=<[198.51.100.7]>",
    S + "smtpd[1201]: warning: unknown[198.51.100.7]: SASL LOGIN authentication failed: "
    "UGFzc3dvcmQ6",
    S + "smtpd[1201]: lost connection after AUTH from unknown[198.51.100.7]",
    S + "smtpd[1201]: disconnect from unknown[198.51.100.7] ehlo=1 auth=0/1 commands=1/2",
    S + "cleanup[1202]: 4Q1xYz3kLmz9sWq: message-id=<20261127055813.GA1@example.org>",
    S + "qmgr[900]: 4Q1xYz3kLmz9sWq: from=<alice@example.org>, size=1234, nrcpt=1 (queue active)",
    S + "smtp[1203]: 4Q1xYz3kLmz9sWq: to=<bob@example.net>, relay=mx.example.net"
    "[203.0.113.25]:25, delay=0.4, delays=0.1/0/0.1/0.2, dsn=2.0.0, status=sent "
    "(250 2.0.0 Ok: queued as 4Q1xZ01)",
    S + "smtp[1203]: 4Q1xYz3kLmz9sWq: to=<bob@example.net>, relay=none, delay=30, "
    "delays=0/0/30/0, dsn=4.4.1, status=deferred (connect to mx.example.net"
    "[203.0.113.25]:25: Connection timed out)",
    S + "local[1204]: 4Q1xYz3kLmz9sWq: to=<carol@example.org>, relay=local, delay=0.1, "
    "delays=0/0/0/0.1, dsn=2.0.0, status=sent (delivered to mailbox)",
    S + "qmgr[900]: 4Q1xYz3kLmz9sWq: removed",
    S + "postscreen[1205]: CONNECT from [198.51.100.7]:51234 to [192.0.2.1]:25",
    S + "anvil[1206]: statistics: max connection rate 1/60s for (smtp:198.51.100.7) at "
    "Nov 27 05:58:13",
]


def _generator_noise() -> List[str]:
    spec = importlib.util.spec_from_file_location("gen_maillog", ROOT / "bench/gen_maillog.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_maillog", module)
    spec.loader.exec_module(module)
    fields = {"pid": 4321, "qid": "0A1B2C3D4E", "ip": "198.51.100.7", "size": 1234}
    return [S[:33] + line.format(**fields) for line in module._NOISE]


NEEDLES = sorted(
    {n for profile in registry().values() for rule in profile.rules for n in rule.needles}
)


@pytest.mark.parametrize("line", POSTFIX_LINES + _generator_noise())
def test_no_needle_in_postfix_lines(line: str) -> None:
    found = [needle for needle in NEEDLES if needle in line]
    assert found == [], f"needles {found} occur in a Postfix line: {line!r}"


@pytest.mark.parametrize("profile", list(registry().values()), ids=lambda p: p.name)
def test_positive_examples_contain_their_needle(profile) -> None:  # type: ignore[no-untyped-def]
    rules = {rule.name: rule for rule in profile.rules}
    for example in profile.examples:
        if example.rule is not None:
            for needle in rules[example.rule].needles:
                assert needle in example.line, f"{needle!r} not in {example.line!r}"


def test_auto_profiles_search_few_needles() -> None:
    """Each distinct first byte of the needles is one pass over every block: keep them shared."""
    assert len(Matcher(select(["auto"]))._line_searches) <= 11


def test_dovecot_alone_takes_three_passes() -> None:
    """Its logins share one pass, its start-up line rides on its logouts' pass."""
    matcher = Matcher(select(["dovecot"]))
    assert len(matcher._line_searches) == 3
    assert b"master: " not in matcher._needles  # under auto it shares Cyrus's pass instead
    assert b"master" in Matcher(select(["auto"]))._needles


def test_postfix_lines_are_no_candidates() -> None:
    block = ("\n".join(POSTFIX_LINES + _generator_noise()) + "\n").encode()
    assert Matcher(select(["auto"]))._candidate_lines(block) == []
