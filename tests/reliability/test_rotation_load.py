"""Log rotation under load: every method, many times, while logins keep coming.

The daemon's core loop (:class:`Service`, real tail, real watchdog, real lmdb
table) runs in a thread; a writer appends ~2,000 lines/s with a fresh client
address per login and rotates the log between two batches.  At the end the
daemon must have read exactly the lines written (none lost, none twice),
matched exactly the logins written, granted every fresh one, none of the
old ones, and the table Postfix reads must equal the grant table.

Short by default; ``--slow`` / ``POPBSMTP_LONG=1`` runs 200 rotations per
method (the figures in docs/reliability.md).
"""

from __future__ import annotations

import threading

import pytest
from reliability_support import METHODS, Traffic, long_run, map_keys
from support import wait_for, write_config

from popbsmtp import config
from popbsmtp.daemon.service import Service

LINES_BETWEEN_ROTATIONS = 500  # 0.25 s of traffic (1,000 in the short CI variant)


class Running:
    """A Service in a thread, as ``popbsmtp run`` would drive it."""

    def __init__(self, settings) -> None:
        self.service = Service(settings)
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="service", daemon=True)

    def _run(self) -> None:
        try:
            self.service.run(on_ready=self.ready.set)
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    def __enter__(self) -> Service:
        self.thread.start()
        wait_for(self.ready.is_set, 15, what="service started")
        if self.error is not None:
            raise self.error
        return self.service

    def __exit__(self, *exc: object) -> None:
        self.service.requests.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "service did not stop"
        if self.error is not None:
            raise self.error


@pytest.mark.parametrize("method", METHODS)
def test_rotation_under_load_loses_and_repeats_nothing(pf_tmp, method, request):
    rotations = 200 if long_run(request.config) else 4
    spacing = LINES_BETWEEN_ROTATIONS if rotations == 200 else 2 * LINES_BETWEEN_ROTATIONS
    log = pf_tmp / "mail.log"
    log.touch()
    settings = config.load(str(write_config(pf_tmp, grace="1h", poll_interval="1s")))
    traffic = Traffic(log)
    with Running(settings) as service:
        traffic.start()
        try:
            for _ in range(rotations):
                mark = traffic.lines + spacing
                wait_for(lambda mark=mark: traffic.lines >= mark, 10, what="traffic")
                traffic.rotate(method)
            wait_for(lambda: traffic.lines >= mark + spacing, 10, what="traffic")
        finally:
            traffic.stop()
        written, fresh, old = traffic.snapshot()
        stats, read = service.matcher.stats, service.tail.stats
        wait_for(lambda: read.lines >= written, 30, what=f"{written} lines read after {method}")
        published = f"lmdb:{pf_tmp}/pbs"
        wait_for(lambda: map_keys(published) == set(fresh), 30, 0.1, what="table published")
        in_map = map_keys(published)
    table = service.table.keys()
    figures = {
        "method": method,
        "rotations": traffic.rotations.get(method, 0),
        "lines_written": written,
        "lines_read": read.lines,
        "logins_written": len(fresh) + len(old),
        "logins_matched": sum(stats.matched.values()),
        "fresh_logins": len(fresh),
        "granted": len(table & set(fresh)),
        "old_granted": len(table & set(old)),
    }
    print("FIGURES", figures)
    assert traffic.rotations[method] == rotations
    assert read.lines == written, f"lines read twice or lost: {figures}"
    assert sum(stats.matched.values()) == len(fresh) + len(old), figures
    assert table == set(fresh), f"lost: {sorted(set(fresh) - table)[:5]}; {figures}"
    assert not table & set(old)
    assert in_map == table
    assert map_keys(published) == set(), "a stopped daemon leaves the table empty"
