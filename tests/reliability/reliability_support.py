"""Shared parts of the fault tests: a traffic writer that rotates like logrotate,
the map as a real Postfix reader sees it, and daemons run under resource limits.

The writer plays syslog: it owns the log's file handle, appends realistic
Postfix noise with Dovecot logins (each login from an address never used
before, so "lost" and "granted twice" are countable), and performs each
rotation method the way logrotate + a HUP'ed syslog do it.
"""

from __future__ import annotations

import gzip
import ipaddress
import os
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Set

from postfix_instance import postfix_tool, require
from support import Daemon, dovecot_login, rfc3339

METHODS = ("rename", "copytruncate", "delaycompress", "delete-recreate")
OLD_AGE = 7200.0  # "old" logins are stamped this far back: always beyond grace


def long_run(config) -> bool:
    """The long variants run with ``pytest --slow`` or ``POPBSMTP_LONG=1``."""
    return bool(config.getoption("--slow")) or os.environ.get("POPBSMTP_LONG") == "1"


def fresh_ip(n: int) -> str:
    """The n-th login address: IPv4 from 10/8, every 7th one IPv6, written out in
    full (eight groups: the default ``ipv6_scope = exact`` grants those in lmdb)."""
    if n % 7 == 3:
        base = 0x20010DB8_0001_0002_0003_0004 << 32
        packed = ipaddress.IPv6Address(base | (0x1000 + (n >> 16)) << 16 | n & 0xFFFF).packed
        return socket.inet_ntop(socket.AF_INET6, packed)  # smtpd's key form
    return str(ipaddress.IPv4Address(0x0A000001 + n))


def old_ip(n: int) -> str:
    """Addresses only ever seen in logins older than grace: never to be granted."""
    return str(ipaddress.IPv4Address(0xAC100001 + n))  # 172.16/12


def noise_line(n: int, stamp: float) -> str:
    when = rfc3339(stamp)
    kind = n % 4
    if kind == 0:
        client = f"unknown[198.51.100.{n % 250}]"
        return f"{when} mail postfix/smtpd[{900 + n % 50}]: connect from {client}\n"
    if kind == 1:
        return (
            f"{when} mail postfix/qmgr[811]: {n:010X}: from=<a@example.org>, size=1234, nrcpt=1\n"
        )
    if kind == 2:
        return (
            f"{when} mail dovecot: imap-login: Disconnected (auth failed, 1 attempts in 2 secs): "
            f"user=<rip=6.6.6.6>, method=PLAIN, rip=203.0.113.{n % 250}, lip=127.0.0.1, "
            "session=<AbCdEf>\n"
        )
    return f"{when} mail postfix/smtp[{1200 + n % 30}]: {n:010X}: to=<b@example.net>, status=sent\n"


class Traffic:
    """A syslog stand-in appending ~``rate`` lines/s to ``path`` from a thread.

    Every ``login_every``-th line is a fresh login; every ``old_every``-th
    login is stamped ``OLD_AGE`` seconds back.  ``rotate(method)`` is
    performed by the writer thread between two batches, as logrotate would.
    """

    def __init__(self, path: Path, rate: int = 2000, login_every: int = 10, old_every: int = 9):
        self.path = path
        self.rate = rate
        self.login_every = login_every
        self.old_every = old_every
        self.lines = 0
        self.fresh: List[str] = []
        self.old: List[str] = []
        self.rotations: Dict[str, int] = {}
        self._requests: List[str] = []
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._lock = threading.Lock()
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives with the thread
        self._pending_switch: Optional[int] = None  # batches left before "HUP"
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self.error: Optional[BaseException] = None

    # -- control from the test thread -------------------------------------

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self._handle.close()
        if self.error is not None:
            raise AssertionError(f"traffic writer failed: {self.error!r}")

    def pause(self, paused: bool) -> None:
        if paused:
            self._paused.set()
        else:
            self._paused.clear()

    def rotate(self, method: str) -> None:
        """Ask for one rotation and wait (polling) until the writer did it."""
        with self._lock:
            before = self.rotations.get(method, 0)
            self._requests.append(method)
        deadline = time.monotonic() + 30
        while self.rotations.get(method, 0) == before or self._pending_switch is not None:
            if self.error is not None or time.monotonic() > deadline:
                raise AssertionError(f"rotation {method} not done: {self.error!r}")
            time.sleep(0.005)

    def snapshot(self) -> tuple:
        """(lines, fresh logins, old logins) written so far, consistently."""
        with self._lock:
            return self.lines, list(self.fresh), list(self.old)

    # -- the writer thread ---------------------------------------------------

    def _run(self) -> None:
        try:
            batch = max(1, self.rate // 100)
            next_at = time.monotonic()
            while not self._stop.is_set():
                if not self._paused.is_set():
                    self._write_batch(batch)
                with self._lock:
                    todo = self._requests.pop(0) if self._requests else None
                if todo is not None:
                    self._do_rotate(todo)
                elif self._pending_switch is not None:
                    self._pending_switch -= 1
                    if self._pending_switch <= 0:
                        self._reopen()
                next_at += 0.01  # pacing a load generator, not synchronisation
                time.sleep(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def _write_batch(self, count: int) -> None:
        now = time.time()
        out = []
        with self._lock:
            for _ in range(count):
                n = self.lines
                if n % self.login_every == 0:
                    k = n // self.login_every
                    if k % self.old_every == 5:
                        ip = old_ip(len(self.old))
                        self.old.append(ip)
                        out.append(dovecot_login(ip, now - OLD_AGE))
                    else:
                        ip = fresh_ip(len(self.fresh))
                        self.fresh.append(ip)
                        out.append(dovecot_login(ip, now))
                else:
                    out.append(noise_line(n, now))
                self.lines += 1
            self._handle.write("".join(out))
            self._handle.flush()

    def _do_rotate(self, method: str) -> None:
        path = str(self.path)
        if method == "copytruncate":
            # logrotate loses lines written between its copy and its truncate;
            # the writer is quiet in that window, so every loss is ours.
            shutil.copyfile(path, path + ".1")
            os.truncate(path, 0)
        elif method in ("rename", "delaycompress"):
            if method == "delaycompress" and os.path.exists(path + ".1"):
                with open(path + ".1", "rb") as src, gzip.open(path + ".2.gz", "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.unlink(path + ".1")
            os.rename(path, path + ".1")
            open(path, "a").close()  # logrotate's "create"
            self._pending_switch = 5  # syslog keeps writing the old file until HUP'ed
        elif method == "delete-recreate":
            os.unlink(path)
            self._pending_switch = 10  # written into the deleted file, then re-created late
        else:
            raise ValueError(method)
        self.rotations[method] = self.rotations.get(method, 0) + 1

    def _reopen(self) -> None:
        with self._lock:
            self._handle.close()
            self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            self._pending_switch = None


def map_keys(table: str) -> Set[str]:
    """Every key of the table as Postfix reads it (``postmap -s``, under its lock)."""
    result = subprocess.run(
        [*postfix_tool("postmap"), "-s", table], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0 or result.stderr:
        raise AssertionError(f"postmap -s {table} failed: {result.stderr}")
    return {line.split("\t", 1)[0] for line in result.stdout.splitlines()}


class LimitedDaemon(Daemon):
    """The real daemon with a file-size limit, a umask, or root's file powers dropped.

    ``unprivileged`` runs it as root *without* the capabilities that bypass
    file permissions (``setpriv``), so a mode-0555 directory or a mode-000
    log hurts it as it would hurt a daemon running as its own user.
    """

    def __init__(
        self,
        config: Path,
        *extra: str,
        unprivileged: bool = False,
        fsize: Optional[int] = None,
        umask: Optional[int] = None,
    ) -> None:
        super().__init__(config, *extra)
        self.unprivileged, self.fsize, self.umask = unprivileged, fsize, umask

    def _preexec(self) -> None:
        if self.umask is not None:
            os.umask(self.umask)
        if self.fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.fsize, resource.RLIM_INFINITY))

    def start(self, ready: bool = True) -> LimitedDaemon:
        self._err = open(self.stderr, "wb")  # noqa: SIM115 - closed by stop()
        command = [sys.executable, "-m", "popbsmtp", "run", "--foreground"]
        if self.unprivileged:
            drop = "-dac_override,-dac_read_search,-fowner"
            command = [require("setpriv"), f"--bounding-set={drop}", *command]
        self.proc = subprocess.Popen(
            [*command, "--config", str(self.config), *self.extra],
            stdout=self._err,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=self._preexec,
        )
        if ready:
            self.wait_log("following ")
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def set_fsize(self, limit: int) -> None:
        assert self.proc is not None
        resource.prlimit(self.proc.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
