"""popbsmtp(8) documents every command and option the argument parser has, and no other."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Dict, Set

from popbsmtp.cli import build_parser

PAGE = Path(__file__).resolve().parents[2] / "docs" / "man" / "popbsmtp.8"


def _plain(roff: str) -> str:
    return re.sub(r"\\f[BIRP]", "", roff.replace("\\-", "-").replace("\\&", ""))


def _parser_commands() -> Dict[str, Set[str]]:
    parser = build_parser()
    commands: Dict[str, Set[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                commands[name] = {
                    option
                    for act in sub._actions
                    if act.help != argparse.SUPPRESS
                    for option in act.option_strings
                    if option.startswith("--") and option != "--help"
                }
    return commands


def _synopsis() -> Dict[str, Set[str]]:
    text = _plain(PAGE.read_text())
    synopsis = text.split(".SH SYNOPSIS", 1)[1].split(".SH DESCRIPTION", 1)[0]
    common = set(re.findall(r"--[a-z][a-z-]*", synopsis.split(".I COMMON", 1)[1]))
    found: Dict[str, Set[str]] = {}
    for block in synopsis.split(".br"):
        head = re.search(r"^\.B popbsmtp ([a-z][a-z-]*)", block.strip(), re.M)
        if head is None:
            continue
        options = set(re.findall(r"--[a-z][a-z-]*", block))
        if "COMMON" in block:
            options |= common
        found[head.group(1)] = options
    return found


def test_every_command_and_option_is_in_the_synopsis() -> None:
    parser, page = _parser_commands(), _synopsis()
    assert set(page) == set(parser), "commands differ between popbsmtp(8) and the parser"
    for name, options in parser.items():
        assert page[name] == options, f"{name}: page {sorted(page[name])}, parser {sorted(options)}"


def test_every_command_is_described() -> None:
    text = _plain(PAGE.read_text())
    described = text.split(".SH COMMANDS", 1)[1].split(".SH OPTIONS", 1)[0]
    for name in _parser_commands():
        assert re.search(rf"^\.(?:B|BI) \"?{re.escape(name)}\b", described, re.M), name
