"""A throw-away Postfix instance on a loopback port, for end-to-end tests.

It runs the real ``master``/``smtpd`` from the Debian packages with its own
config and queue directories in a temp dir; ``relay_check`` decides where
``check_client_access`` goes.  ``rcpt_status`` asks a real smtpd, from a
chosen source address, whether it would relay to a remote recipient.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def require(tool: str) -> str:
    """Fail (never skip) when a real component is missing: CI must have it."""
    path = shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if path is None:
        raise AssertionError(f"{tool} is not installed; run .ci/setup (tests need real Postfix)")
    return path


class PostfixInstance:
    def __init__(
        self,
        workdir: Path,
        table: str,
        *,
        relay_restrictions: Optional[str] = None,
        recipient_restrictions: str = "",
        extra: str = "",
    ) -> None:
        require("postfix")
        self.dir = workdir
        self.etc = workdir / "etc"
        self.port = free_port()
        self.table = table
        if relay_restrictions is None:
            relay_restrictions = (
                f"permit_mynetworks, check_client_access {table}, reject_unauth_destination"
            )
        self.relay_restrictions = relay_restrictions
        self.recipient_restrictions = recipient_restrictions
        self.extra = extra
        self.log = workdir / "postfix.log"

    def write_config(self) -> None:
        for sub in ("etc", "queue", "data"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(self.dir / "data", "postfix")
        main = f"""\
compatibility_level = 3.6
queue_directory = {self.dir}/queue
data_directory = {self.dir}/data
inet_interfaces = loopback-only
inet_protocols = all
mydestination = localhost
myhostname = popbsmtp-test.example
mynetworks = 127.0.0.1/32
smtpd_relay_restrictions = {self.relay_restrictions}
smtpd_recipient_restrictions = {self.recipient_restrictions}
maillog_file_prefixes = {self.dir}
maillog_file = {self.log}
smtpd_client_connection_rate_limit = 0
smtpd_authorized_xclient_hosts = 127.0.0.1
{self.extra}
"""
        (self.etc / "main.cf").write_text(main)
        (self.etc / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))

    def postfix(self, *args: str) -> subprocess.CompletedProcess:
        # `script` gives postfix a tty so it reports errors on stdout, not only to syslog.
        cmd = " ".join(["postfix", "-c", str(self.etc), *args])
        return subprocess.run(
            ["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True, timeout=60
        )

    def start(self) -> PostfixInstance:
        self.write_config()
        result = self.postfix("start")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"postfix did not listen on {self.port}: {result.stdout}")

    def stop(self) -> None:
        self.postfix("stop")
        pid_file = self.dir / "queue" / "pid" / "master.pid"
        deadline = time.monotonic() + 20
        while pid_file.exists() and time.monotonic() < deadline:
            try:
                os.kill(int(pid_file.read_text().split()[0]), 0)
            except (OSError, ValueError):
                break
            time.sleep(0.05)

    def __enter__(self) -> PostfixInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def rcpt_as(self, client: str, rcpt: str = "user@remote.example") -> int:
        """RCPT TO's reply code for a client at any address, IPv4 or IPv6 (XCLIENT).

        The connection comes from 127.0.0.1 (authorized for XCLIENT, not in
        mynetworks); XCLIENT makes smtpd treat it as ``client`` from then on,
        with no client name, so only the address decides.
        """
        addr = f"IPV6:{client}" if ":" in client else client
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as smtp:
            smtp.ehlo("client.example")
            code, reply = smtp.docmd("XCLIENT", f"ADDR={addr} NAME=[UNAVAILABLE]")
            assert code == 220, (code, reply)
            smtp.ehlo("client.example")
            smtp.mail("sender@remote.example")
            code, _ = smtp.rcpt(rcpt)
            smtp.rset()
            return int(code)

    def rcpt_status(self, source: str, rcpt: str = "user@remote.example") -> int:
        """The reply code of RCPT TO for a remote recipient, from ``source``."""
        with smtplib.SMTP("127.0.0.1", self.port, source_address=(source, 0), timeout=10) as smtp:
            smtp.ehlo("client.example")
            smtp.mail("sender@remote.example")
            code, _ = smtp.rcpt(rcpt)
            smtp.rset()
            return int(code)


def postfix_tool(name: str, config_dir: Optional[str] = None) -> list:
    """``[postmap|postconf, -c, DIR]``: the tests' own config dir unless one is given."""
    from support import postfix_dir

    return [require(name), "-c", config_dir or postfix_dir()]


def postmap_query(key: str, table: str, config_dir: Optional[str] = None) -> Optional[str]:
    """``postmap -q``; None when the key is not found (exit 1)."""
    result = subprocess.run(
        [*postfix_tool("postmap", config_dir), "-q", key, table],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode == 1 and not result.stderr:
        return None
    if result.returncode != 0:
        raise AssertionError(f"postmap -q {key} {table} failed: {result.stderr}")
    return result.stdout.rstrip("\n")
