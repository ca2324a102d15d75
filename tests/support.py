"""Shared test helpers: polling with a deadline, config files, log lines, daemons."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, TypeVar

from popbsmtp.sources.position import Position
from popbsmtp.sources.tail import FileTail

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.01, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


_postfix_dir: Optional[str] = None


def wait_started(proc: subprocess.Popen, err: Path, what: str = "daemon started") -> None:
    """Wait for a daemon started with its stderr in ``err`` to say it follows its log;
    fail with that stderr if it exits instead."""
    wait_for(lambda: "following " in err.read_text() or proc.poll() is not None, 20, what=what)
    assert proc.poll() is None, err.read_text()


def postfix_dir() -> str:
    """The tests' own Postfix config directory: an empty ``main.cf``, nothing else.

    Every postmap/postconf the tests run, and every daemon they start, is
    pointed here, so no test reads (or needs) the host's /etc/postfix/main.cf.
    Traversable by Postfix's unprivileged processes; removed at exit.
    """
    global _postfix_dir
    if _postfix_dir is None:
        path = tempfile.mkdtemp(prefix="popbsmtp-test-postfix-", dir="/tmp")
        os.chmod(path, 0o755)
        Path(path, "main.cf").write_text("# the tests' own: Postfix's built-in defaults\n")
        atexit.register(shutil.rmtree, path, True)
        _postfix_dir = path
    return _postfix_dir


def write_config(directory: Path, **options: object) -> Path:
    """A config in ``directory`` with test defaults (no mynetworks, local state)."""
    values = {
        "postfix_config_dir": postfix_dir(),
        "logfile": directory / "mail.log",
        "map": f"lmdb:{directory}/pbs",
        "state_dir": directory / "state",
        "ignore_networks": "none",
        "poll_interval": "1s",
        # dovecot_login() lines have no logout: with the default 24h max_session every
        # such login would hold its client for a day.  1s (< grace) turns session holds
        # off, so a grant lasts `grace`; session tests set max_session themselves.
        "max_session": "1s",
    }
    values.update(options)
    text = "[popbsmtp]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
    path = directory / "popbsmtp.conf"
    path.write_text(text)
    return path


def successful_logins_seen(events: list) -> set:
    """Addresses of login events ``popbsmtp test --json`` granted, checking on the way
    that each refused IPv6 login was refused only because its compressed key would
    reach its neighbours in an lmdb table (the default ``ipv6_scope = exact``)."""
    granted, ipv6 = set(), set()
    for event in events:
        if event["event"] != "login":
            continue
        if event["ignored"] is None:
            granted.add(event["ip"])
        elif event["ignored"].startswith("IPv6 key") and "::" in event["ip"]:
            ipv6.add(event["ip"])
    return granted | ipv6


def rfc3339(stamp: Optional[float] = None) -> str:
    stamp = time.time() if stamp is None else stamp
    frac = f"{stamp % 1:.6f}"[1:]
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + frac + "+00:00"


def bsd(stamp: Optional[float] = None) -> str:
    stamp = time.time() if stamp is None else stamp
    return time.strftime("%b %e %H:%M:%S", time.localtime(stamp))


def dovecot_login(
    ip: str,
    stamp: Optional[float] = None,
    user: str = "alice",
    service: str = "imap",
    traditional: bool = False,
) -> str:
    when = bsd(stamp) if traditional else rfc3339(stamp)
    return (
        f"{when} mail dovecot: {service}-login: Login: user=<{user}>, method=PLAIN, "
        f"rip={ip}, lip=127.0.0.1, mpid=4242, secured, session=<Ab1+/cdEFghIJklm>\n"
    )


def noise(stamp: Optional[float] = None) -> str:
    return f"{rfc3339(stamp)} mail postfix/smtpd[999]: connect from unknown[198.51.100.7]\n"


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()


def append_bytes(path: Path, data: bytes) -> None:
    """Append raw bytes (partial lines, invalid UTF-8) to path, as a log writer would."""
    with open(path, "ab") as handle:
        handle.write(data)


def rotate_by_rename(log: Path, new_data: bytes) -> Path:
    """Rotate as logrotate does by default: rename log to log.1, then start a new log with
    new_data.  Returns the old file's new name (its writer may still append to it)."""
    rotated = log.with_name(log.name + ".1")
    os.rename(log, rotated)
    append_bytes(log, new_data)
    return rotated


def position_after_reading(log: Path) -> Optional[Position]:
    """Where a FileTail stands after reading log through (what saved state would hold)."""
    tail = FileTail(str(log))
    tail.read()
    position = tail.position
    tail.close()
    return position


class ManualClock:
    """A monotonic clock for injection that moves only when a test sets ``now``."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def popbsmtp(*args: str, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "popbsmtp", *args],
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,  # type: ignore[arg-type]
    )
    if check and result.returncode != 0:
        raise AssertionError(f"popbsmtp {' '.join(args)} failed: {result.stderr}")
    return result


class Daemon:
    """The real ``popbsmtp run --foreground`` in a subprocess.

    Every started daemon is remembered so conftest can kill those a failing
    test left running (tests stop what they start).
    """

    started: list[Daemon] = []

    def __init__(self, config: Path, *extra: str) -> None:
        self.config = config
        self.extra = extra
        self.stderr = config.parent / f"daemon-{time.monotonic_ns()}.err"
        self.proc: Optional[subprocess.Popen] = None

    def start(self, ready: bool = True) -> Daemon:
        Daemon.started.append(self)
        self._err = open(self.stderr, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "popbsmtp",
                "run",
                "--foreground",
                "--config",
                str(self.config),
                *self.extra,
            ],
            stdout=self._err,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        if ready:
            self.wait_log("following ")
        return self

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 15.0) -> None:
        def seen() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            return text in self.log()

        wait_for(seen, timeout, 0.02, f"daemon log {text!r}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        finally:
            self._err.close()
        return code

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
