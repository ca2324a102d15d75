"""``postfix_config_dir``: every postconf/postmap popbsmtp runs asks that instance, and a
Postfix without main.cf gets a sentence saying so and what to do, never a bare
``postmap: fatal`` line.  Real postconf and postmap throughout."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import append, dovecot_login, popbsmtp, write_config


@pytest.fixture
def unconfigured(pf_tmp: Path) -> Path:
    """A Postfix configuration directory as "No configuration" leaves it: no main.cf."""
    path = pf_tmp / "postfix-unconfigured"
    path.mkdir()
    return path


def _says_not_configured(text: str, directory: Path) -> None:
    assert f"Postfix is not configured: {directory} has no main.cf" in text, text
    assert "postfix_config_dir" in text and "dpkg-reconfigure postfix" in text, text
    assert "fatal" not in text and "Traceback" not in text, text


def test_the_instance_directory_decides_defaults_and_mynetworks(pf_tmp):
    instance = pf_tmp / "postfix-other"
    instance.mkdir()
    (instance / "main.cf").write_text(
        "default_database_type = cdb\nmynetworks = 203.0.113.0/24 [2001:db8:77::]/48\n"
    )
    config = pf_tmp / "popbsmtp.conf"
    config.write_text(f"[popbsmtp]\npostfix_config_dir = {instance}\n")
    out = popbsmtp("check-config", "--explain", "-c", str(config)).stdout
    assert "map = cdb:/etc/postfix/pop-before-smtp" in out, out
    assert "postconf default_database_type = cdb" in out, out
    assert "203.0.113.0/24" in out and "[2001:db8:77::]/48" in out, out
    # The command-line flag names the same setting.
    flag = popbsmtp("check-config", "--explain", "--postfix-dir", str(instance)).stdout
    assert f"postfix_config_dir = {instance}" in flag and "# command line" in flag, flag


def test_mynetworks_without_main_cf_says_what_to_do(pf_tmp, unconfigured):
    config = write_config(pf_tmp, postfix_config_dir=unconfigured, ignore_networks="mynetworks")
    result = popbsmtp("check-config", "-c", str(config), check=False)
    assert result.returncode != 0
    _says_not_configured(result.stderr, unconfigured)


def test_default_map_without_main_cf_is_lmdb_and_says_why(pf_tmp, unconfigured):
    config = pf_tmp / "popbsmtp.conf"
    config.write_text(f"[popbsmtp]\npostfix_config_dir = {unconfigured}\nignore_networks = none\n")
    out = popbsmtp("check-config", "--explain", "-c", str(config)).stdout
    assert "map = lmdb:/etc/postfix/pop-before-smtp" in out, out
    assert f"no main.cf in {unconfigured}" in out, out


@pytest.mark.parametrize("kind", ["hash", "cdb"])
def test_rebuilt_table_without_main_cf_fails_at_start_with_the_reason(pf_tmp, unconfigured, kind):
    config = write_config(pf_tmp, postfix_config_dir=unconfigured, map=f"{kind}:{pf_tmp}/pbs")
    append(pf_tmp / "mail.log", dovecot_login("192.0.2.5"))
    result = popbsmtp("run", "--foreground", "-c", str(config), check=False)
    assert result.returncode != 0
    _says_not_configured(result.stderr, unconfigured)


def test_list_read_map_without_main_cf_says_what_to_do(pf_tmp, unconfigured):
    config = write_config(pf_tmp, postfix_config_dir=unconfigured, map=f"hash:{pf_tmp}/pbs")
    result = popbsmtp("list", "--read-map", "-c", str(config), check=False)
    assert result.returncode != 0
    _says_not_configured(result.stderr, unconfigured)


def test_doctor_without_main_cf_reports_it(pf_tmp, unconfigured):
    config = write_config(pf_tmp)
    result = popbsmtp("doctor", "-c", str(config), "--postfix-dir", str(unconfigured), check=False)
    assert result.returncode == 1
    errors = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
    assert errors and "postfix" in errors[0], result.stdout
    _says_not_configured(result.stdout, unconfigured)
