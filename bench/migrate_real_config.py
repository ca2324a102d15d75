#!/usr/bin/env python3
"""``popbsmtp migrate`` on the Perl tool's own sample config, each pattern in turn.

Not part of CI (the Perl source is not in this repository): give the sample
``pop-before-smtp-conf.pl`` as an argument, or let it be read from a git
mirror of the Perl source (``--git-dir``).  First the file as shipped is
translated; then, for every commented-out pattern block of its pattern
section, that block alone is switched on (its ``#$...`` lines and their
``#    '...'`` continuations lose one ``#``) and translated.  Prints one
JSON row per run; exits 1 when a block gives no profile or a run lists a
statement the reader does not know.

    migrate_real_config.py [FILE] [--git-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from typing import Dict, Iterator, List, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from popbsmtp.cli.migrate import translate  # noqa: E402
from popbsmtp.cli.perlconf import read  # noqa: E402

MIRROR = "/work/.mirror/computersalat+pop-before-smtp/repo"


def sample(args: argparse.Namespace) -> str:
    if args.file:
        with open(args.file, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    return subprocess.run(
        ["git", "--git-dir", args.git_dir, "show", "HEAD:pop-before-smtp-conf.pl"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def variants(text: str) -> Iterator[Tuple[str, str]]:
    """(title, text with that one pattern block switched on)."""
    lines = text.split("\n")
    marks = [i for i, line in enumerate(lines) if "OF PATTERNS" in line]
    start, end = marks[1], marks[-1]  # the section between the 2nd START and the END
    i = start
    while i < end:
        if re.match(r"#\$\w+", lines[i]):
            title_at = i - 1
            while title_at > start and lines[title_at].startswith("# "):
                title_at -= 1
            title = lines[title_at + 1].lstrip("# ").strip()
            copy = list(lines)
            while i < end and lines[i].strip():
                if re.match(r"#(\$\w+|\s+')", lines[i]):
                    copy[i] = lines[i][1:]
                i += 1
            yield title, "\n".join(copy)
        i += 1


def run(title: str, text: str) -> Dict[str, object]:
    migration = translate(read(text), "pop-before-smtp-conf.pl")
    settings = {k: v for k, v, _ in migration.settings}
    return {
        "variant": title,
        "profiles": settings.get("profiles"),
        "log_format": settings.get("log_format", ""),
        "untranslated": migration.untranslated,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", nargs="?")
    parser.add_argument("--git-dir", default=MIRROR)
    args = parser.parse_args()
    text = sample(args)
    rows: List[Dict[str, object]] = [run("as shipped", text)]
    rows += [run(title, variant) for title, variant in variants(text)]
    bad = 0
    for row in rows:
        print(json.dumps(row))
        if row["profiles"] in (None, "auto") or row["untranslated"]:
            bad += 1
    print(f"{len(rows)} runs, {bad} with no profile or with untranslated statements")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
