#!/usr/bin/env python3
"""Render popbsmtp.conf.5 from its template and the option schema.

Usage: python3 docs/man/render.py [--check].  The option list is the same
SCHEMA that drives parsing and the shipped config, so the manual cannot
drift from the code (tests/unit/test_default_config.py checks the output is
current).  It writes roff only; rendering to text is man(1)'s job.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from popbsmtp.config import SCHEMA  # noqa: E402


def roff(text: str) -> str:
    """Escape text for a roff line: backslashes, hyphens, a leading dot or quote."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def options() -> str:
    out = []
    for opt in SCHEMA:
        shown = opt.default if isinstance(opt.default, str) else opt.example
        default = f"(default: {shown})" if shown else "(default: empty)"
        out += [".TP", f".B {opt.name}", roff(opt.help), roff(default)]
    return "\n".join(out)


def render() -> str:
    template = (HERE / "popbsmtp.conf.5.in").read_text(encoding="utf-8")
    return template.replace("@OPTIONS@", options())


def main(argv: list) -> int:
    target = HERE / "popbsmtp.conf.5"
    text = render()
    if "--check" in argv:
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current != text:
            print(f"{target} is out of date: run python3 docs/man/render.py", file=sys.stderr)
            return 1
        return 0
    target.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
