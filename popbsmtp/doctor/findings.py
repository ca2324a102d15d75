"""What a ``doctor`` check finds, and how findings are printed (the report, ``--fix-hint``).

Every check module returns :class:`Finding` values; none of them prints.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from typing import List, Optional, TextIO, Tuple

from popbsmtp import postfix

OK, WARNING, ERROR = "OK", "WARNING", "ERROR"


@dataclass(frozen=True)
class Finding:
    level: str
    subject: str
    detail: str
    fix: str = ""
    commands: Tuple[str, ...] = ()  # exact postconf commands for --fix-hint


def report(findings: List[Finding], out: TextIO) -> None:
    for item in findings:
        out.write(f"{item.level:<8} {item.subject}: {item.detail}\n")
        if item.fix and item.level != OK:
            out.write(f"{'':<8}   fix: {item.fix}\n")


def fix_hint(findings: List[Finding], out: TextIO, postfix_dir: Optional[str] = None) -> None:
    """The postconf commands that fix the Postfix side, then the reload they need."""
    commands = [c for item in findings for c in item.commands]
    for command in dict.fromkeys(commands):
        out.write(command + "\n")
    if commands:
        other = postfix_dir and os.path.normpath(postfix_dir) != postfix.DEFAULT_CONFIG_DIR
        out.write(
            shlex.join(
                ["postfix", *(["-c", postfix_dir] if other and postfix_dir else []), "reload"]
            )
        )
        out.write("\n")


def exit_code(findings: List[Finding]) -> int:
    return 1 if any(item.level == ERROR for item in findings) else 0
