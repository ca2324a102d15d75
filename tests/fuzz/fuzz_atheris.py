#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris/libFuzzer) of everything a log line reaches.

The first input byte picks a target: the whole matcher over all profiles on
raw bytes; a block of lines through the daemon's block search, which must
find what line-by-line matching finds; a genuine example line whose user
field is replaced by the fuzz input (the granted address must stay the
server's); the address normaliser; the envelope parser; a control request
dropped into the spool (applied as checked or set aside); a state file
(loaded valid or set aside); a config option's value (bounded, or a short
error).  Any exception or wrong grant is a crash that libFuzzer reports with
the input that caused it.  Not collected by pytest.

    python3 tests/fuzz/fuzz_atheris.py --seconds 300 [libFuzzer options] [CORPUS_DIR]

Progress lines (``fuzz: inputs=… cpu=…s wrong=0``) go to stderr; libFuzzer's
own summary (``Done N runs in S second(s)``) ends the run.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import tempfile

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "..")]

with atheris.instrument_imports():
    from fuzz_oracle import (
        NOW,
        all_profiles_matcher,
        check_config_value,
        check_control_request,
        check_genuine,
        check_login,
        check_state_file,
        genuine_lines,
        matcher_for,
    )

    from popbsmtp.config import SCHEMA
    from popbsmtp.parse.addresses import InvalidAddress, postfix_key
    from popbsmtp.parse.envelope import EnvelopeParser

MATCHER = all_profiles_matcher()
GENUINE = genuine_lines()
PARSER = EnvelopeParser("auto")
COUNT = {"inputs": 0}
SPOOL_STATE = tempfile.mkdtemp(prefix="popbsmtp-fuzz-spool-")  # mode 5's state_dir
STATE = tempfile.mkdtemp(prefix="popbsmtp-fuzz-state-")  # mode 6's
MODES = 8


def one_input(data: bytes) -> None:
    COUNT["inputs"] += 1
    if COUNT["inputs"] & (COUNT["inputs"] - 1) == 0:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime
        print(f"fuzz: inputs={COUNT['inputs']} cpu={cpu:.1f}s wrong=0", file=sys.stderr)
    if not data:
        return
    mode, rest = data[0] % MODES, data[1:]
    if mode == 5:
        check_control_request(SPOOL_STATE, rest)
    elif mode == 6:
        check_state_file(STATE, rest)
    elif mode == 7:
        option = SCHEMA[rest[0] % len(SCHEMA)] if rest else SCHEMA[0]
        check_config_value(option.name, rest[1:].decode("utf-8", "replace"))
    elif mode == 0:
        check_login(MATCHER.match(rest, NOW))
    elif mode == 4:
        lines = [MATCHER.match(line, NOW) for line in rest.split(b"\n")]
        assert MATCHER.match_block(rest, NOW) == [login for login in lines if login is not None]
    elif mode == 1:
        provider = atheris.FuzzedDataProvider(rest)
        genuine = GENUINE[provider.ConsumeIntInRange(0, len(GENUINE) - 1)]
        user = provider.ConsumeUnicodeNoSurrogates(600).replace("\n", " ").replace("\r", " ")
        matcher = matcher_for(genuine.log_format)
        check_genuine(genuine, matcher.match(genuine.with_user(user).encode(), NOW))
    elif mode == 2:
        try:
            key = postfix_key(rest.decode("utf-8", "replace"))
        except InvalidAddress:
            return
        assert postfix_key(key) == key
    else:
        text = rest.decode("utf-8", "replace")
        envelope = PARSER.parse(text, NOW)
        assert envelope is None or envelope.time == envelope.time


def seed_corpus() -> str:
    """Example lines of every profile, one file per target mode."""
    directory = tempfile.mkdtemp(prefix="popbsmtp-fuzz-corpus-")
    for n, genuine in enumerate(GENUINE):
        line = genuine.with_user(genuine.user).encode()
        for mode in (0, 3):
            with open(os.path.join(directory, f"{mode}-{n}"), "wb") as handle:
                handle.write(bytes([mode]) + line)
        with open(os.path.join(directory, f"2-{n}"), "wb") as handle:
            handle.write(b"\x02" + genuine.ip.encode())
    seeds = {
        "5-add": b'\x05{"op": "add", "ip": "192.0.2.1", "grace": 60}',
        "6-state": b'\x06{"version": 1, "saved": 0, "position": null, '
        b'"grants": [["192.0.2.1", 4000000000.0, "manual", "add"]]}',
        "7-grace": b"\x07" + bytes([[o.name for o in SCHEMA].index("grace")]) + b"30m",
    }
    for name, seed in seeds.items():
        with open(os.path.join(directory, name), "wb") as handle:
            handle.write(seed)
    return directory


def main() -> None:
    logging.disable(logging.CRITICAL)  # the set-aside warnings of modes 5 and 6, by the million
    argv = list(sys.argv)
    if "--seconds" in argv:
        at = argv.index("--seconds")
        argv[at : at + 2] = [f"-max_total_time={int(argv[at + 1])}"]
    if not any(not a.startswith("-") for a in argv[1:]):
        argv.append(seed_corpus())
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
