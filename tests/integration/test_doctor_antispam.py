"""doctor's audit of unknown users and DNS blocklists, on throw-away Postfix configs.

Real postconf reads every setting; where the doctor says mail for unknown
users is accepted, a real smtpd accepts it, and after the fix commands it
refuses it.  ``--dns`` is tested against a DNS stub on loopback (no network).
"""

from __future__ import annotations

import shlex
import socket
import struct
import subprocess
import threading
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
from postfix_instance import PostfixInstance
from support import append, dovecot_login, popbsmtp, wait_for, write_config

from popbsmtp import postfix
from popbsmtp.doctor import Finding, antispam


def instance(tmp: Path, extra: str = "", **kwargs: str) -> PostfixInstance:
    made = PostfixInstance(tmp / "postfix", f"lmdb:{tmp}/pbs", extra=extra, **kwargs)
    made.write_config()
    return made


def levels(findings: List[Finding], subject: str) -> List[str]:
    return [f.level for f in findings if f.subject == subject]


def test_defaults_refuse_unknown_users_and_use_no_list(pf_tmp: Path) -> None:
    found = antispam.check(str(instance(pf_tmp).etc))
    assert levels(found, "unknown users") == ["OK"]
    assert levels(found, "blocklists") == ["OK"]
    assert "no DNS blocklist" in next(f.detail for f in found if f.subject == "blocklists")


def test_unknown_users_accepted_is_an_error_and_the_fix_works(pf_tmp: Path) -> None:
    extra = (
        "alias_maps =\n"  # this machine's /etc/aliases has no .db: leave it out
        "local_recipient_maps =\n"
        "smtpd_reject_unlisted_recipient = no\n"
        "unknown_local_recipient_reject_code = 450\n"
    )
    pf = instance(pf_tmp, extra)
    found = antispam.check(str(pf.etc))
    assert sorted(levels(found, "unknown users")) == ["ERROR", "ERROR", "WARNING"]
    with pf.start():
        # the real smtpd agrees with the doctor: an unknown local user is accepted
        assert pf.rcpt_status("127.0.0.1", "nosuchuser@localhost") == 250
        for item in found:
            for command in item.commands:
                subprocess.run(shlex.split(command), check=True, capture_output=True)
        assert levels(antispam.check(str(pf.etc)), "unknown users") == ["OK"]
        pf.postfix("reload")
        wait_for(
            lambda: pf.rcpt_status("127.0.0.1", "nosuchuser@localhost") == 550,
            timeout=20,
            interval=0.2,
            what="smtpd to refuse unknown users after the fix",
        )


def test_reject_maps_rbl_translated_and_dead_list_flagged(pf_tmp: Path) -> None:
    pf = instance(
        pf_tmp,
        "maps_rbl_domains = relays.ordb.org, bl.example.net\n",
        recipient_restrictions="permit_mynetworks, reject_unauth_destination, reject_maps_rbl",
    )
    found = antispam.check(str(pf.etc))
    old = [f for f in found if "uses reject_maps_rbl" in f.detail]
    assert [f.level for f in old] == ["WARNING"]
    command = old[0].commands[0]
    assert "reject_rbl_client bl.example.net" in command and "ordb" not in command
    dead = [f for f in found if f.detail.startswith("relays.ordb.org")]
    assert dead and dead[0].level == "WARNING" and "2006-12-18" in dead[0].detail
    subprocess.run(shlex.split(command), check=True, capture_output=True)
    value = postfix.parameter("smtpd_recipient_restrictions", str(pf.etc))
    assert value.endswith("reject_unauth_destination, reject_rbl_client bl.example.net")
    again = antispam.check(str(pf.etc))
    assert not [f for f in again if "uses reject_maps_rbl" in f.detail]
    assert [f.level for f in again if "maps_rbl_domains is set" in f.detail] == ["WARNING"]


def test_reject_maps_rbl_with_only_dead_lists_is_an_error(pf_tmp: Path) -> None:
    pf = instance(
        pf_tmp,
        "maps_rbl_domains = relays.ordb.org\nsmtpd_client_restrictions = reject_maps_rbl\n",
    )
    found = antispam.check(str(pf.etc))
    assert [f.level for f in found if "uses reject_maps_rbl" in f.detail] == ["ERROR"]


def test_dead_lists_in_master_cf_and_postscreen(pf_tmp: Path) -> None:
    pf = instance(
        pf_tmp,
        "postscreen_dnsbl_sites = bl.example.net*2, list.dsbl.org\n"
        "smtpd_client_restrictions = reject_rbl_client bl.example.org=127.0.0.2\n",
    )
    with open(pf.etc / "master.cf", "a") as handle:
        handle.write(
            "127.0.0.1:2587 inet n - n - - smtpd\n"
            "  -o smtpd_client_restrictions=reject_rbl_client,dnsbl.sorbs.net\n"
        )
    found = antispam.check(str(pf.etc))
    warned = {f.detail.split(":")[0] for f in found if f.level == "WARNING"}
    assert warned == {"list.dsbl.org", "dnsbl.sorbs.net"}
    assert antispam.zones_used(
        {"x": "reject_rbl_client bl.example.org=127.0.0.2"},
        {"maps_rbl_domains": "", "postscreen_dnsbl_sites": ""},
    ) == ["bl.example.org"]


class StubDNS:
    """Answers A 127.0.0.2 for every name under ``wild.example``, NXDOMAIN otherwise."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.asked: List[str] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve)
        self.thread.start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                data, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            name, end = self._name(data)
            self.asked.append(name)
            question = data[12:end]
            wild = name.endswith(".wild.example")
            header = struct.pack(">HHHHHH", struct.unpack(">H", data[:2])[0],
                                 0x8180 if wild else 0x8183, 1, int(wild), 0, 0)  # fmt: skip
            answer = struct.pack(">HHHIH", 0xC00C, 1, 1, 60, 4) + bytes([127, 0, 0, 2])
            self.sock.sendto(header + question + (answer if wild else b""), peer)

    @staticmethod
    def _name(data: bytes) -> Tuple[str, int]:
        labels, pos = [], 12
        while data[pos]:
            labels.append(data[pos + 1 : pos + 1 + data[pos]].decode())
            pos += 1 + data[pos]
        return ".".join(labels), pos + 5

    def close(self) -> None:
        self.done.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def stub_dns() -> Iterator[StubDNS]:
    stub = StubDNS()
    try:
        yield stub
    finally:
        stub.close()


def test_dns_finds_a_list_that_answers_for_everyone(pf_tmp: Path, stub_dns: StubDNS) -> None:
    pf = instance(
        pf_tmp, "smtpd_client_restrictions = reject_rbl_client bl.wild.example, "
        "reject_rbl_client bl.quiet.example\n",
    )  # fmt: skip
    config = write_config(pf_tmp, map=f"lmdb:{pf_tmp}/pbs", postfix_config_dir=pf.etc)
    append(pf_tmp / "mail.log", dovecot_login("192.0.2.5"))
    quiet = popbsmtp("doctor", "--config", str(config), check=False)
    assert "dns bl." not in quiet.stdout and not stub_dns.asked  # no DNS without --dns
    result = popbsmtp(
        "doctor", "--config", str(config), "--dns", f"127.0.0.1:{stub_dns.port}", check=False
    )
    assert result.returncode == 1
    assert "ERROR    dns bl.wild.example: bl.wild.example lists 127.0.0.1" in result.stdout
    assert "OK       dns bl.quiet.example" in result.stdout
    assert set(stub_dns.asked) == {"1.0.0.127.bl.wild.example", "1.0.0.127.bl.quiet.example"}
