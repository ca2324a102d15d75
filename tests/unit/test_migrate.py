"""``popbsmtp migrate``: Perl-form configs written here (not the Perl tool's file).

Each fixture has the shape of one of the Perl sample's ``$pat`` variants (the
program names and log layout it matches) in regexes of our own; the real
sample file is checked by bench/migrate_real_config.py when its copy exists.
"""

from __future__ import annotations

import configparser
import os
import stat
import time
from pathlib import Path

import pytest
from support import popbsmtp, postfix_dir

from popbsmtp.cli.migrate import identify, render, translate
from popbsmtp.cli.perlconf import CodeRef, read

HEADER = """# settings for the old relay helper
use strict;
use vars qw($pat $out_pat $grace %file_tail $dbfile $mynet_func $tie_func);

# $grace = 99;
#$dbfile = '/nowhere/at/all';
"""

# One fixture per variant shape: (login pattern assignment, expected profile, log_format).
VARIANTS = {
    "uw": (
        "$pat = '^[LOGTIME] \\S+ imapd\\[\\d+\\]: Login user=\\S+ ' .\n"
        "    'host=\\[(\\d+(?:\\.\\d+){3})\\]';",
        "uw",
        "",
    ),
    "gnu": (
        "$pat = '^[LOGTIME] \\S+ gnu-pop3d\\[\\d+\\]: User \\S+ in from (\\S+)';",
        "gnu-pop3d",
        "",
    ),
    "qpopper-syslog": (
        "$pat = '^[LOGTIME] \\S+ qpopper\\[\\d+\\]: login at (\\S+)';",
        "qpopper",
        "",
    ),
    "qpopper-own": ("$pat = '^[LOGTIME] \\[popper\\] login at (\\S+)';", "qpopper", "qpopper"),
    "qpopper-trace": ("$pat = '^[LOGTIME] \\[\\d+\\] Stats: x (\\S+)';", "qpopper", "qpopper"),
    "cyrus": ("$pat = '^[LOGTIME] \\S+ cyrus/pop3\\[\\d+\\]: login: \\[(\\S+)\\]';", "cyrus", ""),
    "courier": (
        "$pat = '^[LOGTIME] \\S+ pop3d: LOGIN, user=\\S+, ip=\\[(\\S+)\\]';\n"
        "$out_pat = '^[LOGTIME] \\S+ pop3d: LOGOUT, ip=\\[(\\S+)\\]';",
        "courier",
        "",
    ),
    "vpopmail": (
        "$pat = '^[LOGTIME] \\S+ vpopmail\\[\\d+\\]: vchkpw: from (\\S+)';",
        "vpopmail",
        "",
    ),
    "cucipop": ("$pat = '^[LOGTIME] \\S+ cucipop\\[\\d+\\]: \\S+ (\\S+) 1';", "cucipop", ""),
    "vm-pop3d": ("$pat = '^[LOGTIME] \\S+ vm-pop3d\\[\\d+\\]: from (\\S+)';", "vm-pop3d", ""),
    "vm-pop3d-2line": (
        "$PID_pat = '^[LOGTIME] \\S+ vm-pop3d\\[(\\d+)\\]: ';\n"
        "$IP_pat = $PID_pat . 'Connect from (\\S+)';\n"
        "$OK_pat = $PID_pat . 'User in';",
        "vm-pop3d",
        "",
    ),
    "popa3d-2line": (
        "$PID_pat = '^[LOGTIME] \\S+ popa3d\\[(\\d+)\\]: ';\n"
        "$IP_pat = $PID_pat . 'Session from (\\S+)';",
        "popa3d",
        "",
    ),
    "popa3d": ("$pat = '^[LOGTIME] \\S+ popa3d\\[\\d+\\]: passed -- \\[(\\S+)\\]';", "popa3d", ""),
    "perdition": ("$pat = '^[LOGTIME] \\S+ perdition\\[\\d+\\]: Auth: (\\S+)->';", "perdition", ""),
    "spop3d": ("$pat = '^[LOGTIME] \\S+ spop3d\\[\\d+\\]: ok - (\\S+)';", "spop3d", ""),
    "teapop": ("$pat = '^[LOGTIME] \\S+ teapop\\[\\d+\\]: ok \\[(\\S+)\\]';", "teapop", ""),
    "dovecot": (
        "$pat = '^[LOGTIME] \\S+ dovecot: imap-login: Login: rip=(.*), lip=';",
        "dovecot",
        "",
    ),
    "dovecot-own": (
        "$pat = '^dovecot: [LOGTIME] Info: imap-login: rip=(\\S+),';",
        "dovecot",
        "dovecot",
    ),
    "dovecot-old-own": (
        "$pat = '^(?:imap|pop3)-login: [LOGTIME] Info: \\[(\\S+)\\]';",
        "dovecot1",
        "dovecot",
    ),
    "apple": (
        "$logtime_pat = '(\\w+ \\d+ \\d+ \\d+:\\d+:\\d+)';\n"
        '$pat = \'^[LOGTIME] IMAP User "[^"]+" log on successful from (\\S+)\';',
        "apple",
        "apple",
    ),
}


def _settings(text: str) -> dict:
    migration = translate(read(text), "fixture.pl")
    return {key: value for key, value, _ in migration.settings}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_pat_variant_gives_its_profile(name: str) -> None:
    assignment, profile, log_format = VARIANTS[name]
    settings = _settings(HEADER + assignment + "\n1;\n")
    assert settings["profiles"] == profile
    assert settings.get("log_format", "") == log_format


def test_values_carried_over_and_comments_ignored() -> None:
    text = HEADER + (
        "$grace = 45*60;\n"
        "$file_tail{'name'} = '/var/log/relay.log';\n"
        "#$file_tail{'name'} = '/var/log/commented-out';\n"
        '$dbfile = "/etc/postfix/relayers";\n'
        "$dbvalue = 'RELAY';\n"
        "$debug = 1;\n$logto = '/var/log/pbs.log';\n"
        "1;\n"
    )
    settings = _settings(text)
    assert settings["grace"] == "45m"
    assert settings["logfile"] == "/var/log/relay.log"
    assert settings["map"] == "hash:/etc/postfix/relayers"
    assert settings["map_value"] == "RELAY"
    assert settings["log_level"] == "debug"
    assert settings["log_target"] == "/var/log/pbs.log"
    assert settings["profiles"] == "uw"  # no $pat: the Perl tool's default
    assert settings["ignore_networks"] == "mynetworks"


def test_pod_sections_are_off_until_their_cut_lines_go() -> None:
    block = (
        "=cut #--- dbm section START\n"
        "use NDBM_File;\n$tie_func = \\&tie_NDBM;\n"
        "sub tie_NDBM { tie %db, 'NDBM_File', $dbfile; }\n"
        "=cut #--- dbm section END\n"
    )
    assert _settings(HEADER + block)["map"] == "hash:/etc/postfix/pop-before-smtp"
    enabled = block.replace("=cut", "#=cut")
    assert _settings(HEADER + enabled)["map"] == "dbm:/etc/postfix/pop-before-smtp"
    conf = read(HEADER + enabled)
    assert conf.scalars["tie_func"] == CodeRef("tie_NDBM") and "NDBM_File" in conf.modules


def test_custom_networks_routine_and_not_postfix_tables() -> None:
    text = HEADER + (
        "$mynet_func = \\&my_nets;\nsub my_nets\n{\n    '10.9.0.0/16 192.0.2.0/24';\n}\n"
        "$tie_func = \\&tie_tcprules;\n"
    )
    migration = translate(read(text), "f.pl")
    settings = {k: v for k, v, _ in migration.settings}
    assert settings["ignore_networks"] == "10.9.0.0/16, 192.0.2.0/24"
    assert "map" not in settings
    assert any("tcprules" in u for u in migration.untranslated)


def test_untranslatable_things_are_listed_with_a_reason() -> None:
    text = HEADER + (
        "$pat = '^[LOGTIME] \\S+ mystery-popd\\[\\d+\\]: ok (\\S+)';\n"
        "$file_tail{'interval'} = 5;\n"
        "$file_tail{'name'} = '-';\n"
        "$flock = 0;\n"
        "open(LOG, '>>/tmp/x') or die;\n"
    )
    migration = translate(read(text), "f.pl")
    joined = "\n".join(migration.untranslated)
    assert "custom regex" in joined and "f.pl:" in joined
    assert "File::Tail" in joined
    assert "standard input" in joined
    assert "locking" in joined
    assert "open(LOG" in joined
    assert {k: v for k, v, _ in migration.settings}["profiles"] == "auto"
    assert "# Not translated:" in render(migration)


def test_the_reader_never_runs_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text = f"system('touch {marker}');\n`touch {marker}`;\nBEGIN {{ system('touch {marker}') }}\n"
    translate(read(text), "f.pl")
    assert not marker.exists()


@pytest.mark.parametrize(
    "text",
    [
        "$x = " + " " * 200_000 + "'a';",
        "}" * 200_000,
        "$x = " + "(" * 50_000 + "1;",
        "$x = '" + "\\'" * 100_000 + "';",
        "$y = 12345678901234567890;",
    ],
)
def test_hostile_files_are_read_in_linear_time(text: str) -> None:
    started = time.monotonic()
    conf = read(text)
    assert time.monotonic() - started < 5
    assert conf.unknown or conf.scalars


def test_identify_unknown_pattern() -> None:
    assert identify("^[LOGTIME] nothing-known (\\S+)") is None


def test_cli_prints_a_config_that_popbsmtp_accepts(tmp_path: Path) -> None:
    perl = tmp_path / "pop-before-smtp-conf.pl"
    perl.write_text(
        HEADER + VARIANTS["courier"][0] + "\n$grace = 600;\n"
        f"$file_tail{{'name'}} = '{tmp_path}/mail.log';\n1;\n"
    )
    out = popbsmtp("migrate", str(perl)).stdout
    parsed = configparser.ConfigParser()
    parsed.read_string(out)
    assert parsed["popbsmtp"]["grace"] == "10m"
    dest = tmp_path / "popbsmtp.conf"
    done = popbsmtp("migrate", str(perl), "--write", str(dest))
    assert "wrote" in done.stderr
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o644
    assert dest.read_text() == out
    checked = popbsmtp("check-config", "-c", str(dest), "--postfix-dir", postfix_dir(), "--explain")
    assert "profiles = courier" in checked.stdout
    again = popbsmtp("migrate", str(perl), "--write", str(dest), check=False)
    assert again.returncode != 0 and "--force" in again.stderr
    dest.write_text("old\n")
    popbsmtp("migrate", str(perl), "--write", str(dest), "--force")
    assert dest.read_text() == out


def test_cli_names_a_missing_file(tmp_path: Path) -> None:
    result = popbsmtp("migrate", str(tmp_path / "absent.pl"), check=False)
    assert result.returncode != 0 and "absent.pl" in result.stderr
