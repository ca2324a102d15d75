"""Matcher.match_block() finds what match() finds line by line, from any profile's needles."""

import time

from popbsmtp.parse.matcher import Matcher, _shortest_needles
from popbsmtp.profiles import Profile, Rule, registry

NOW = time.time()
NOISE = [
    b"Nov 27 04:48:08 mail postfix/smtpd[1]: connect from unknown[198.51.100.7]",
    b"Nov 27 04:48:08 mail postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[198.51.100.7]: "
    b"454 4.7.1 <x@example.com>: Relay access denied; from=<a@b> to=<x@example.com>",
    b"",
    b"garbage without an envelope host= -login: ",
]


def example_lines():
    lines = []
    for profile in registry().values():
        for example in profile.examples:
            lines.append(example.line.encode())
    return lines


def one_by_one(matcher, lines):
    return [login for line in lines if (login := matcher.match(line, NOW)) is not None]


def interleaved():
    lines = []
    for n, line in enumerate(example_lines()):
        lines += [NOISE[n % len(NOISE)], line, line + b"\r"]  # CRLF logs too
    return lines


def test_block_and_line_by_line_agree_on_every_example():
    lines = interleaved()
    profiles = list(registry().values())
    expected = one_by_one(Matcher(profiles), lines)
    matcher = Matcher(profiles)
    found = matcher.match_block(b"\n".join(lines) + b"\n", NOW)
    assert found == expected
    assert len(found) >= len(example_lines())  # every positive example, twice


def test_blocks_split_anywhere_on_line_boundaries_agree():
    lines = interleaved()
    profiles = list(registry().values())
    expected = one_by_one(Matcher(profiles), lines)
    matcher = Matcher(profiles)
    found = []
    for start in range(0, len(lines), 7):
        found += matcher.match_block(b"\n".join(lines[start : start + 7]) + b"\n", NOW)
    assert found == expected


def test_overlong_candidate_is_counted_and_skipped():
    dovecot = registry()["dovecot"]
    line = next(e.line for e in dovecot.examples if e.ip).encode()
    matcher = Matcher([dovecot], max_line_length=len(line) - 1)
    assert matcher.match_block(line + b"\n", NOW) == []
    assert matcher.stats.overlong == 1 and matcher.stats.candidates == 0


def test_last_line_without_newline_is_still_a_line():
    dovecot = registry()["dovecot"]
    line = next(e.line for e in dovecot.examples if e.ip).encode()
    matcher = Matcher([dovecot])
    assert len(matcher.match_block(NOISE[0] + b"\n" + line, NOW)) == 1


def test_needles_containing_another_are_not_searched_twice():
    assert _shortest_needles(["-login: Login: ", "-login: ", " host="]) == [b" host=", b"-login: "]


def test_an_empty_needle_makes_every_line_a_candidate():
    rule = Rule(name="any", programs=("p",), pattern=r"hello {ip}", needle="")
    matcher = Matcher([Profile("t", "test", (rule,), ())])
    block = b"Nov 27 04:48:08 h p: hello 192.0.2.1\nNov 27 04:48:09 h q: x\n"
    found = matcher.match_block(block, NOW)
    assert [login.ip for login in found] == ["192.0.2.1"]
    assert matcher.stats.candidates == 2


def test_a_rule_with_a_choice_of_needles_takes_one_that_shares_a_pass():
    from popbsmtp.parse.matcher import choose_needles
    from popbsmtp.profiles import Rule

    def rule(name, needle, also=()):
        return Rule(
            name=name, programs=("p",), pattern="Login AB Killed x", needle=needle, also=also
        )

    login = rule("login", "Login")
    shares_byte = rule("a", "Killed", also=("Login AB",))
    contains = rule("b", "Killed", also=("Login",))
    alone = rule("c", "Killed", also=(" x",))
    assert choose_needles([login, shares_byte]) == ["Login", "Login AB"]
    assert choose_needles([login, contains]) == ["Login", "Login"]
    assert choose_needles([login, alone]) == ["Login", "Killed"]  # nothing shared: first choice
