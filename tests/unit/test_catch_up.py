"""Catching up with a big log: the map is published in batches, the state streamed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support import append, dovecot_login, rfc3339, write_config

from popbsmtp import config
from popbsmtp.daemon import service
from popbsmtp.daemon.service import Service
from popbsmtp.grants.state import StateFile


def test_catch_up_publishes_in_batches_and_loses_nothing(
    pf_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "PUBLISH_PENDING", 7)
    now = time.time()
    ips = [f"192.0.2.{n}" for n in range(1, 41)]
    noise = f"{rfc3339(now - 60)} mail postfix/smtpd[4711]: connect from unknown[198.51.100.1]\n"
    # ~3.5 MiB: the tail hands over 1 MiB blocks, so several blocks, ~12 logins each.
    text = "".join(dovecot_login(ip, now - 60) + noise * 1000 for ip in ips)
    assert len(text) > 3 << 20
    append(pf_tmp / "mail.log", text)
    settings = config.load(str(write_config(pf_tmp, grace="1h", max_session="2h")))
    svc = Service(settings, clock=lambda: now)
    svc.start()
    try:
        assert svc.keeper.writes >= 3  # published while reading, not once at the end
        assert svc.keeper.writer is not None
        assert svc.keeper.writer.keys() == set(ips) == set(svc.table.keys())
        assert svc.policy.sessions.stats.opened == len(ips)
    finally:
        svc.shutdown()
    saved = StateFile(settings.state_dir).load()
    assert sorted(row[0] for row in saved.grants) == sorted(ips)
