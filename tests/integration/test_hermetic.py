"""No test depends on the host's Postfix configuration.

The whole suite already runs on machines whose /etc/postfix has no main.cf
(Postfix installed with "No configuration"; CI is one).  This test proves
the other case: the Postfix-facing tests run again in a private mount
namespace where /etc/postfix/main.cf is poisoned, a line every postconf and
postmap that reads it dies on.  Any test (or product code) that reached for
the host's configuration instead of its own ``-c DIR`` would fail there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from postfix_instance import require

ROOT = Path(__file__).resolve().parents[2]
POSTFIX_FACING = [
    "tests/contract/test_map_writers.py",
    "tests/integration/test_cli.py",
    "tests/integration/test_doctor.py",
    "tests/integration/test_end_to_end.py",
    "tests/unit/test_addresses.py",
    "tests/unit/test_default_config.py",
]
POISON = "this line is not a parameter: any postconf or postmap that reads it dies\n"
SCRIPT = """
set -e
mount --make-rprivate /
mount --bind "$1" /etc/postfix
shift
grep -q 'not a parameter' /etc/postfix/main.cf
exec "$@"
"""


def test_postfix_facing_tests_pass_with_a_poisoned_host_main_cf(pf_tmp):
    etc = pf_tmp / "etc-postfix"
    shutil.copytree("/etc/postfix", etc, symlinks=True)
    (etc / "main.cf").write_text(POISON)
    probe = subprocess.run(
        [require("postconf"), "-c", str(etc), "mynetworks"], capture_output=True, text=True
    )
    assert probe.returncode != 0 and "missing '='" in probe.stderr, "the poison must bite"
    result = subprocess.run(
        [
            require("unshare"),
            "--mount",
            "sh",
            "-c",
            SCRIPT,
            "sh",
            str(etc),
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            *POSTFIX_FACING,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    summary = result.stdout.strip().splitlines()[-1:] or [result.stderr]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in summary[0] and "failed" not in summary[0], summary
