#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris/libFuzzer) of everything a log line reaches.

The first input byte picks a target: the whole matcher over all profiles on
raw bytes; a block of lines through the daemon's block search (the C
one-pass prefilter when built), which must find what line-by-line matching
finds; a genuine example line whose user field is replaced by the fuzz
input (the granted address must stay the server's); the address normaliser;
the envelope parser, whose C split (when built) must equal its regexes.  Any
exception or wrong grant is a crash that libFuzzer reports with the input
that caused it.  Not collected by pytest.

    python3 tests/fuzz/fuzz_atheris.py --seconds 300 [libFuzzer options] [CORPUS_DIR]

Progress lines (``fuzz: inputs=… cpu=…s wrong=0``) go to stderr; libFuzzer's
own summary (``Done N runs in S second(s)``) ends the run.
"""

from __future__ import annotations

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
        check_genuine,
        check_login,
        genuine_lines,
    )

    from popbsmtp.parse.addresses import InvalidAddress, postfix_key
    from popbsmtp.parse.envelope import _SPLITTERS, REGEX_SPLITTERS, EnvelopeParser

MATCHER = all_profiles_matcher()
GENUINE = genuine_lines()
PARSER = EnvelopeParser("auto")
COUNT = {"inputs": 0}


def one_input(data: bytes) -> None:
    COUNT["inputs"] += 1
    if COUNT["inputs"] & (COUNT["inputs"] - 1) == 0:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime
        print(f"fuzz: inputs={COUNT['inputs']} cpu={cpu:.1f}s wrong=0", file=sys.stderr)
    if not data:
        return
    mode, rest = data[0] % 5, data[1:]
    if mode == 0:
        check_login(MATCHER.match(rest, NOW))
    elif mode == 4:
        lines = [MATCHER.match(line, NOW) for line in rest.split(b"\n")]
        assert MATCHER.match_block(rest, NOW) == [login for login in lines if login is not None]
    elif mode == 1:
        provider = atheris.FuzzedDataProvider(rest)
        genuine = GENUINE[provider.ConsumeIntInRange(0, len(GENUINE) - 1)]
        user = provider.ConsumeUnicodeNoSurrogates(600).replace("\n", " ").replace("\r", " ")
        check_genuine(genuine, MATCHER.match(genuine.with_user(user).encode(), NOW))
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
        for kind, regexes in REGEX_SPLITTERS.items():  # the C split (when built) equals them
            assert _SPLITTERS[kind](text, NOW) == regexes(text, NOW), (kind, text)


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
    return directory


def main() -> None:
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
