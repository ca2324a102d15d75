"""README's first command: the demo grants an address Postfix can look up."""

from __future__ import annotations

import re
import subprocess
import sys

from postfix_instance import postmap_query


def test_demo_grants_and_prints_the_postmap_command(pf_tmp):
    demo = pf_tmp / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "popbsmtp", "demo", "--dir", str(demo), "--duration", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=pf_tmp,
    )
    assert result.returncode == 0, result.stderr
    command = re.search(r"postmap -q (\S+) (lmdb:\S+)", result.stderr)
    assert command, result.stderr
    ip, table = command.groups()
    assert f"granted {ip}" in result.stderr
    assert table == f"lmdb:{demo}/pop-before-smtp"
    # It was in the table until the demo stopped; a stopped daemon leaves it empty.
    assert re.search(rf"withdrew [1-9][0-9]* clients from {re.escape(table)}", result.stderr)
    assert postmap_query(ip, table) is None
