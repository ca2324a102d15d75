"""``popbsmtp doctor --probe`` against a real smtpd, configured right and wrong.

Right: the check in smtpd_relay_restrictions.  Wrong: the check only in
smtpd_recipient_restrictions under the default smtpd_relay_restrictions (the
classic guides' mistake), and no check at all.  The probe must leave no
grant behind, also when it is interrupted with SIGTERM while granted.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Tuple

import pytest
from postfix_instance import PostfixInstance, postmap_query
from support import Daemon, append, dovecot_login, popbsmtp, wait_for, write_config

DEFAULT_RELAY = "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination"
PROBE_IP = "192.0.2.199"  # the first XCLIENT candidate; the instance allows XCLIENT


@pytest.fixture
def site(pf_tmp: Path, request: pytest.FixtureRequest) -> Iterator[Tuple[Path, str, str]]:
    """(popbsmtp config, table, kind of Postfix set-up) with a running smtpd and daemon."""
    kind = request.param
    table = f"lmdb:{pf_tmp}/pbs"
    options = {
        "right": {},
        "recipient-only": {
            "relay_restrictions": DEFAULT_RELAY,
            "recipient_restrictions": f"check_client_access {table}, reject_unauth_destination",
        },
        "no-check": {"relay_restrictions": DEFAULT_RELAY},
    }[kind]
    pf = PostfixInstance(pf_tmp / "postfix", table, **options)
    append(pf_tmp / "mail.log", dovecot_login("198.51.100.5"))
    config = write_config(pf_tmp, map=table, postfix_config_dir=pf.etc)
    with Daemon(config), pf:  # the daemon first: an smtpd started before the table 451s
        yield config, table, kind


def doctor_probe(config: Path) -> subprocess.CompletedProcess:
    return popbsmtp("doctor", "--config", str(config), "--probe", check=False)


def probe_lines(out: str) -> list:
    return [line for line in out.splitlines() if " probe: " in line]


@pytest.mark.parametrize("site", ["right"], indirect=True)
def test_probe_right_setup(site) -> None:
    config, table, _ = site
    result = doctor_probe(config)
    lines = probe_lines(result.stdout)
    assert len(lines) == 3, result.stdout + result.stderr
    assert all(line.startswith("OK ") for line in lines), lines
    assert "refused before the grant: *_unauth_destination" in lines[0]
    assert f"may relay while granted: check_client_access {table} permitted it" in lines[1]
    assert "refused again after removal" in lines[2]
    assert postmap_query(PROBE_IP, table) is None
    assert PROBE_IP not in popbsmtp("list", "--config", str(config)).stdout


@pytest.mark.parametrize("site", ["recipient-only", "no-check"], indirect=True)
def test_probe_wrong_setups(site) -> None:
    config, table, _ = site
    result = doctor_probe(config)
    assert result.returncode == 1
    errors = [line for line in probe_lines(result.stdout) if line.startswith("ERROR")]
    assert len(errors) == 1, result.stdout
    assert "still refused while granted" in errors[0]
    assert "Relay access denied" in errors[0]
    assert postmap_query(PROBE_IP, table) is None
    assert PROBE_IP not in popbsmtp("list", "--config", str(config)).stdout


@pytest.mark.parametrize("site", ["no-check"], indirect=True)
def test_probe_interrupted_while_granted_leaves_no_grant(site) -> None:
    config, table, _ = site
    proc = subprocess.Popen(
        [sys.executable, "-m", "popbsmtp", "doctor", "--config", str(config), "--probe"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # the grant is in place while the probe waits for smtpd to accept it
        wait_for(lambda: postmap_query(PROBE_IP, table) is not None, timeout=20, interval=0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "interrupted (signal 15); grant removed" in out, out + err
    assert postmap_query(PROBE_IP, table) is None
    assert PROBE_IP not in popbsmtp("list", "--config", str(config)).stdout
