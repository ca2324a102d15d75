"""``popbsmtp test`` reports exactly the decisions the daemon applies.

One log (grants, session holds and releases, refusals for every reason, a
logout of no session, a two-line login, a reused Cyrus process) goes through
the real core loop (:class:`Service`, a fixed clock) and through the real
``popbsmtp test --json`` command; the two lists of decisions must be equal,
in order.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import List, Tuple

from support import ManualClock, append, popbsmtp, rfc3339, write_config

from popbsmtp import config
from popbsmtp.cli.logtest import iso
from popbsmtp.daemon.service import Service
from popbsmtp.policy import Decision

Row = Tuple[str, object, object, str, object]


def the_log(now: float) -> str:
    def at(ago: float) -> str:
        return rfc3339(now - ago)

    def bsd(ago: float) -> str:
        return time.strftime("%b %e %H:%M:%S", time.localtime(now - ago))

    dove = "mail dovecot: imap-login: Login: user=<{u}>, method=PLAIN, rip={ip}, lip=127.0.0.1"
    lines = [
        f"{at(300)} {dove.format(u='a', ip='192.0.2.1')}, mpid=11, session=<S1>",
        f"{at(290)} {dove.format(u='b', ip='192.0.2.2')}, mpid=12, session=<S2>",
        f"{at(280)} mail dovecot: imap(a)<11><S1>: Disconnected: Logged out in=1 out=2",
        f"{at(270)} mail dovecot: imap(z)<99><nope>: Disconnected: Logged out in=1 out=2",
        f"{at(260)} {dove.format(u='c', ip='10.1.2.3')}, mpid=13, session=<S3>",
        f"{at(250)} {dove.format(u='d', ip='0.0.0.0')}, mpid=14, session=<S4>",
        f"{at(7200)} {dove.format(u='e', ip='192.0.2.5')}, mpid=15, session=<S5>",
        f"{at(240)} vm imapd: LOGIN, user=f, ip=[::ffff:192.0.2.6], port=[1], protocol=IMAP",
        f"{at(230)} vm imapd: LOGOUT, user=f, ip=[::ffff:192.0.2.6], port=[1], headers=0, "
        "body=0, rcvd=1, sent=2, time=3",
        f"{bsd(30)} mail popa3d[901]: Session from 192.0.2.7",
        f"{bsd(29)} mail popa3d[901]: Authentication passed for alice",
        f"{bsd(220)} mail popa3d[902]: Session from 192.0.2.17",
        f"{bsd(219)} mail popa3d[902]: Authentication passed for bob",
        f"{at(210)} vm cyrus/imap[500]: login: [192.0.2.8] g plaintext User logged in "
        "SESSIONID=<x-1>",
        f"{at(200)} vm cyrus/imap[500]: login: [192.0.2.9] h plaintext User logged in "
        "SESSIONID=<x-2>",
        f"{at(190)} {dove.format(u='b', ip='192.0.2.2')}, mpid=16, session=<S6>",
        f"{at(180)} mail dovecot: imap(b)<12><S2>: Disconnected: Logged out in=1 out=2",
    ]
    return "".join(line + "\n" for line in lines)


def daemon_decisions(tmp: Path, conf: Path, now: float) -> Tuple[List[Row], int]:
    clock = ManualClock()
    clock.now = now
    seen: List[Decision] = []
    svc = Service(config.load(str(conf)), clock=clock, dry_run=True)
    svc.on_decision = seen.append
    svc.start()
    try:
        append(tmp / "mail.log", the_log(now))
        svc.step()
        granted = len(svc.table)
    finally:
        svc.shutdown()
    rows = [
        (d.kind, d.ip, iso(d.until) if d.until else None, d.event.rule_id, d.reason) for d in seen
    ]
    return rows, granted


def cli_decisions(tmp: Path, conf: Path, now: float) -> Tuple[List[Row], int]:
    stamp = dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat()
    out = popbsmtp("test", "-c", str(conf), "--json", "--now", stamp, str(tmp / "mail.log"))
    records = [json.loads(line) for line in out.stdout.splitlines()]
    rows = [
        (r["decision"], r["ip"], r["until"], f"{r['profile']}/{r['rule']}", r["reason"])
        for r in records
        if "summary" not in r
    ]
    return rows, records[-1]["summary"]["granted_now"]


def test_popbsmtp_test_and_the_daemon_agree_decision_for_decision(tmp_path: Path) -> None:
    now = float(int(time.time()))
    conf = write_config(tmp_path, grace="60s", max_session="1h", ignore_networks="10.0.0.0/8")
    daemon, daemon_granted = daemon_decisions(tmp_path, conf, now)
    tested, tested_granted = cli_decisions(tmp_path, conf, now)
    kinds = {row[0] for row in daemon}
    # The log exercises every kind of decision, and refusals for every reason.
    assert kinds == {"grant", "hold", "release", "refuse", "unknown-logout"}, daemon
    reasons = {row[4] for row in daemon if row[0] == "refuse"}
    assert {"ignored network", "too old"} <= reasons, reasons
    assert any(r and r.startswith("invalid address") for r in reasons), reasons
    assert tested == daemon
    assert tested_granted == daemon_granted > 0
