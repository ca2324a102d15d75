"""``popbsmtp doctor --probe``: ask the real smtpd, with a real grant.

The static checks read main.cf; this asks the running smtpd the question
users ask: may a client relay after its login?  A test client address
speaks through XCLIENT (when Postfix lets 127.0.0.1 use it) or from a
loopback address outside ``mynetworks``.  It must be refused, then allowed
while granted for a short time, then refused again after the grant is
removed.  No mail is sent (RSET follows RCPT, no DATA) and no DNS is asked.
The grant is removed in a ``finally`` that SIGTERM/SIGHUP/SIGINT also reach,
and it expires by itself within ``GRANT`` seconds should even that fail.
"""

from __future__ import annotations

import contextlib
import signal
import smtplib
import socket
import time
from typing import Iterator, List, Optional, Tuple

import netaddr

from popbsmtp import postfix
from popbsmtp.cli import admin
from popbsmtp.config import Settings
from popbsmtp.doctor.findings import ERROR, OK, WARNING, Finding
from popbsmtp.doctor.probes import tail_lines
from popbsmtp.errors import PopbsmtpError
from popbsmtp.parse.addresses import parse_networks
from popbsmtp.postfix import PostfixError

GRANT = 120.0  # seconds: expires by itself should the removal never run
WAIT = 15.0  # for smtpd to see a table change (its processes reopen changed tables)
RCPT = "popbsmtp-probe@example.com"  # RFC 2606: never a real mailbox
XCLIENT_CANDIDATES = ("192.0.2.199", "198.51.100.199", "203.0.113.199")
LOOPBACK_CANDIDATES = ("127.83.41.7", "127.201.9.13")


class Interrupted(Exception):
    pass


def listen_address(config_dir: str) -> Tuple[str, int]:
    """Where the main smtpd listens: the first inet smtpd service of master.cf."""
    for service in postfix.smtpd_services(config_dir):
        name, _, kind = service.name.rpartition("/")
        if kind != "inet":
            continue
        host, _, port = name.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        if host == "*" or not host.strip("0.:"):  # a wildcard address: ask over loopback
            host = "127.0.0.1"
        number = int(port) if port.isdigit() else socket.getservbyname(port, "tcp")
        return host, number
    raise PostfixError("master.cf runs no inet smtpd service to probe")


def rcpt(server: Tuple[str, int], client: str, xclient: bool) -> Tuple[int, str]:
    """RCPT TO's reply for ``client``; RSET before any DATA, so nothing is sent."""
    source = ("127.0.0.1" if xclient else client, 0)
    with smtplib.SMTP(server[0], server[1], source_address=source, timeout=10) as smtp:
        smtp.ehlo("popbsmtp-probe.invalid")
        if xclient:
            code, reply = smtp.docmd("XCLIENT", f"ADDR={client} NAME=[UNAVAILABLE]")
            if code != 220:
                raise PostfixError(f"XCLIENT refused: {code} {reply.decode(errors='replace')}")
            smtp.ehlo("popbsmtp-probe.invalid")
        smtp.mail("<>")
        code, reply = smtp.rcpt(RCPT)
        smtp.rset()
        return int(code), reply.decode(errors="replace")


def pick_client(settings: Settings, server: Tuple[str, int]) -> Tuple[str, bool]:
    """(address, through XCLIENT?) outside mynetworks and ignore_networks."""
    trusted = parse_networks("mynetworks", postconf_dir=settings.postfix_config_dir).networks
    ignored = parse_networks(settings.ignore_networks, postconf_dir=settings.postfix_config_dir)
    fenced = trusted | ignored.networks
    with smtplib.SMTP(server[0], server[1], source_address=("127.0.0.1", 0), timeout=10) as smtp:
        smtp.ehlo("popbsmtp-probe.invalid")
        xclient = smtp.has_extn("xclient")
    for address in XCLIENT_CANDIDATES if xclient else LOOPBACK_CANDIDATES:
        if netaddr.IPAddress(address) not in fenced:
            return address, xclient
    raise PostfixError(
        "no test client: 127.0.0.0/8 is in mynetworks and XCLIENT is not allowed for"
        " 127.0.0.1 (postconf -e smtpd_authorized_xclient_hosts=127.0.0.1 allows the probe)"
    )


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    def stop(signum: int, _frame: object) -> None:
        raise Interrupted(f"signal {signum}")

    saved = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def _until(want_ok: bool, server: Tuple[str, int], client: str, xclient: bool) -> Tuple[int, str]:
    """Poll RCPT until it is (or is not) accepted, or the deadline; the last reply."""
    deadline = time.monotonic() + WAIT
    while True:
        code, reply = rcpt(server, client, xclient)
        if (code == 250) == want_ok or time.monotonic() >= deadline:
            return code, reply
        time.sleep(0.25)  # smtpd reopens a changed table only in a new process


def _log_says(settings: Settings, client: str) -> str:
    """Postfix's own log line about the probe's last refusal, if the log has it."""
    with contextlib.suppress(OSError):
        for line in reversed(tail_lines(settings.logfile, 2000)):
            text = line.decode(errors="replace")
            if f"[{client}]" in text and "reject: RCPT" in text:
                return text.split(": ", 2)[-1].strip()[:300]
    return ""


def probe(settings: Settings) -> List[Finding]:
    try:
        server = listen_address(settings.postfix_config_dir)
        client, xclient = pick_client(settings, server)
    except (PostfixError, OSError, PopbsmtpError) as exc:
        return [Finding(ERROR, "probe", f"cannot probe: {exc}", "")]
    how = "through XCLIENT" if xclient else "from a loopback address"
    table = str(settings.map)
    found: List[Finding] = []
    granted = False
    try:
        with _signals_interrupt():
            code, reply = rcpt(server, client, xclient)
            if code == 250:
                why = f"{client} may relay before any grant: relaying is open to it"
                return [Finding(ERROR, "probe", why, "check mynetworks and the restrictions")]
            why = f"{client} ({how}) refused before the grant: {decided(code, reply, False, table)}"
            found.append(Finding(OK, "probe", why))
            granted = True
            admin.perform(settings, {"op": "add", "ip": client, "grace": GRANT})
            code, reply = _until(True, server, client, xclient)
            if code == 250:
                why = f"{client} may relay while granted: {decided(code, reply, True, table)}"
                found.append(Finding(OK, "probe", why))
            else:
                log = _log_says(settings, client)
                why = f"{client} still refused while granted: {decided(code, reply, True, table)}"
                fix = "see the smtpd lines above ('popbsmtp doctor --fix-hint')"
                found.append(Finding(ERROR, "probe", why + (f"; log: {log}" if log else ""), fix))
            admin.perform(settings, {"op": "remove", "ip": client})
            granted = False
            code, reply = _until(False, server, client, xclient)
            if code == 250:
                found.append(Finding(ERROR, "probe", f"{client} still relays after removal", ""))
            else:
                why = f"{client} refused again after removal: {decided(code, reply, False, table)}"
                found.append(Finding(OK, "probe", why))
    except Interrupted as exc:
        found.append(Finding(WARNING, "probe", f"interrupted ({exc}); grant removed", ""))
    except (OSError, smtplib.SMTPException, PostfixError, PopbsmtpError) as exc:
        found.append(Finding(ERROR, "probe", f"probe failed: {exc}", ""))
    finally:
        if granted:
            _withdraw(settings, client)
    return found


def _withdraw(settings: Settings, client: str) -> Optional[str]:
    """Remove the grant with the stop signals held back until it is done."""
    held = {signal.SIGTERM, signal.SIGHUP, signal.SIGINT}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        with contextlib.suppress(PopbsmtpError, OSError):
            return admin.perform(settings, {"op": "remove", "ip": client})
        return None
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def decided(code: int, reply: str, granted: bool, table: str) -> str:
    """Which restriction answered, from the reply (only the grant changed between probes)."""
    if code == 250:
        return f"check_client_access {table} permitted it" if granted else "something permitted it"
    if code == 451 and "Server configuration error" in reply:
        return (
            f"{code}: smtpd could not read a table (started before {table} existed, or"
            " cannot read it; its log names the table, 'postfix reload' restarts smtpd)"
        )
    if "Relay access denied" in reply:
        return "*_unauth_destination refused it (Relay access denied)"
    return f"refused by another restriction: {code} {reply}"
