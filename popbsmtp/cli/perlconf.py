"""A tolerant reader of the Perl pop-before-smtp's config file; it never runs it.

That file is a Perl library the old daemon ``require``\\ s.  Executing it
would run whatever it holds as root, so this reads only the statements its
sample uses: scalar, hash-element, list and hash assignments whose values
are string/number constants, ``.``/``*`` expressions of them, earlier
scalars, code references (``\\&name``) and ``qw()`` lists; ``use`` lines; and
``sub`` definitions (their name, and their body when it is one string).
POD blocks (from ``=cut`` to ``=cut``, the sample's way of switching
sections off) and comments are skipped.  Anything else is kept as a
statement not understood, with its line, for the caller to report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

Value = Union[str, int, "CodeRef", List[str]]
MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class CodeRef:
    """``\\&name`` (``name`` is empty for an anonymous ``sub { ... }``)."""

    name: str


@dataclass
class PerlConfig:
    scalars: Dict[str, Value] = field(default_factory=dict)
    hashes: Dict[str, Dict[str, Value]] = field(default_factory=dict)
    lists: Dict[str, List[str]] = field(default_factory=dict)
    modules: List[str] = field(default_factory=list)
    subs: Dict[str, Optional[str]] = field(default_factory=dict)  # name -> sole string body
    lines: Dict[str, int] = field(default_factory=dict)  # "$pat", "$file_tail{name}" -> line
    unknown: List[Tuple[int, str]] = field(default_factory=list)


class PerlSyntax(ValueError):
    pass


def _active_text(text: str) -> str:
    """Blank out POD blocks and comments, keeping line numbers and quotes."""
    out: List[str] = []
    in_pod = False
    for line in text.split("\n"):
        if in_pod:
            if re.match(r"=cut\b", line):
                in_pod = False
            out.append("")
            continue
        if re.match(r"=[A-Za-z]", line):
            in_pod = True  # even "=cut" opens POD outside it: the sample relies on that
            out.append("")
            continue
        out.append(line)
    return "\n".join(out)


def _statements(text: str) -> List[Tuple[int, str]]:
    """Split into top-level statements: ``;`` at depth 0, or a closing ``}`` block.

    One pass, linear in the text: the first word is kept aside, so deciding
    whether a ``}`` ends a block never re-reads the statement.
    """
    result: List[Tuple[int, str]] = []
    buf: List[str] = []
    head = ""  # the statement's first characters, for _is_block
    start = line = 1
    depth = 0
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\n":
            line += 1
        if quote:
            buf.append(ch)
            if ch == "\\" and i + 1 < len(text):
                buf.append(text[i + 1])
                line += text[i + 1] == "\n"
                i += 2
                continue
            if ch == quote:
                quote = ""
            i += 1
            continue
        if ch == "#":  # a comment runs to the end of the line
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        if not head and not ch.isspace():
            start = line
        if len(head) < 16 and (head or not ch.isspace()):
            head += ch
        buf.append(ch)
        if ch in "'\"":
            quote = ch
        elif ch in "{(":
            depth += 1
        elif ch in "})":
            depth -= 1
        if (ch == ";" and depth <= 0) or (ch == "}" and depth <= 0 and _is_block(head)):
            result.append((start, "".join(buf).strip()))
            buf, head, depth = [], "", 0
        i += 1
    if head:
        result.append((start, "".join(buf).strip()))
    return result


def _is_block(head: str) -> bool:
    return bool(re.match(r"(sub|if|unless|foreach|for|while)\b", head))


_TOKEN = re.compile(
    r"\s*(?:(?P<sq>'(?:[^'\\]|\\.)*')|(?P<dq>\"(?:[^\"\\]|\\.)*\")|(?P<num>[0-9]+)"
    r"|(?P<ref>\\&\w+)|(?P<var>\$\w+)|(?P<qw>qw\s*\((?P<words>[^)]*)\))|(?P<anon>sub\s*\{.*\})"
    r"|(?P<op>[.*+,()-]|=>))",
    re.S,
)


def _tokens(expr: str) -> List[Tuple[str, str]]:
    out: List[Tuple[str, str]] = []
    pos = 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None or m.end() == pos:
            raise PerlSyntax(f"cannot read {expr[pos : pos + 30]!r}")
        kind = m.lastgroup if m.lastgroup != "words" else "qw"
        out.append((kind or "", m.group(kind or 0)))
        pos = m.end()
        while pos < len(expr) and expr[pos].isspace():
            pos += 1
    return out


def _string(kind: str, raw: str) -> str:
    body = raw[1:-1]
    if kind == "sq":
        return re.sub(r"\\([\\'])", r"\1", body)
    if re.search(r"(?<!\\)[$@]\w", body):
        raise PerlSyntax(f"interpolation in {raw!r}")
    escapes = {"n": "\n", "t": "\t"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(1)), body)


class _Expr:
    """Left-to-right ``.``/``+`` of ``*`` products of constants and known scalars."""

    def __init__(self, tokens: List[Tuple[str, str]], scalars: Dict[str, Value]) -> None:
        self.tokens, self.pos, self.scalars = tokens, 0, scalars

    def parse(self) -> Value:
        value = self._sum()
        if self.pos != len(self.tokens):
            raise PerlSyntax(f"unexpected {self.tokens[self.pos][1]!r}")
        return value

    def _sum(self) -> Value:
        value = self._product()
        while self.pos < len(self.tokens) and self.tokens[self.pos][1] in (".", "+"):
            op = self.tokens[self.pos][1]
            self.pos += 1
            right = self._product()
            if op == ".":
                value = f"{_scalar_text(value)}{_scalar_text(right)}"
            else:
                value = _number(value) + _number(right)
        return value

    def _product(self) -> Value:
        value = self._atom()
        while self.pos < len(self.tokens) and self.tokens[self.pos][1] == "*":
            self.pos += 1
            value = _number(value) * _number(self._atom())
            if value > 10**9:
                raise PerlSyntax("number out of range")
        return value

    def _atom(self) -> Value:
        if self.pos >= len(self.tokens):
            raise PerlSyntax("expression ends early")
        kind, raw = self.tokens[self.pos]
        self.pos += 1
        if kind in ("sq", "dq"):
            return _string(kind, raw)
        if kind == "num":
            return _bounded(raw)
        if raw == "-" and self.pos < len(self.tokens) and self.tokens[self.pos][0] == "num":
            self.pos += 1
            return -_bounded(self.tokens[self.pos - 1][1])
        if kind == "ref":
            return CodeRef(raw[2:])
        if kind == "anon":
            return CodeRef("")
        if kind == "var":
            if raw[1:] not in self.scalars:
                raise PerlSyntax(f"{raw} is not set before")
            return self.scalars[raw[1:]]
        if kind == "qw":
            return raw[raw.index("(") + 1 : -1].split()
        if raw == "(":
            value = self._sum()
            if self.pos < len(self.tokens) and self.tokens[self.pos][1] == ")":
                self.pos += 1
            return value
        raise PerlSyntax(f"unexpected {raw!r}")


def _bounded(digits: str) -> int:
    if len(digits) > 10:
        raise PerlSyntax(f"{digits[:12]}... is too large a number")
    return int(digits)


def _scalar_text(value: Value) -> str:
    if isinstance(value, (CodeRef, list)):
        raise PerlSyntax("a reference is not text")
    return str(value)


def _number(value: Value) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,10}", value.strip()):
        return int(value)
    raise PerlSyntax(f"{value!r} is not a number")


def _items(body: str, scalars: Dict[str, Value]) -> List[str]:
    """``qw(a b)`` or ``('a', "b")`` -> the strings (nested references refused)."""
    tokens = _tokens(body)
    if len(tokens) == 1 and tokens[0][0] == "qw":
        return tokens[0][1][tokens[0][1].index("(") + 1 : -1].split()
    out: List[str] = []
    for kind, raw in tokens:
        if kind in ("sq", "dq"):
            out.append(_string(kind, raw))
        elif kind == "num":
            out.append(raw)
        elif kind == "qw":
            out += raw[raw.index("(") + 1 : -1].split()
        elif raw not in ("(", ")", ",", "=>"):
            raise PerlSyntax(f"cannot read list item {raw!r}")
    return out


# Matched on a statement already stripped of its ";" and outer blanks.
_SCALAR = re.compile(r"\$(\w+)\s*=(?!=)(.*)\Z", re.S)
_ELEMENT = re.compile(r"\$(\w+)\{\s*'?(\w+)'?\s*\}\s*=(?!=)(.*)\Z", re.S)
_ARRAY = re.compile(r"@(\w+)\s*=(.*)\Z", re.S)
_HASH = re.compile(r"%(\w+)\s*=(.*)\Z", re.S)
_SUB = re.compile(r"sub\s+(\w+)\s*\{(.*)\}\s*\Z", re.S)
_USE = re.compile(r"(?:use|require|no)\s+([\w:]+)", re.S)


def read(text: str) -> PerlConfig:
    """Read the assignments; raises :class:`PerlSyntax` only for a file too large."""
    if len(text) > MAX_BYTES:
        raise PerlSyntax(f"more than {MAX_BYTES} bytes: not a pop-before-smtp config")
    conf = PerlConfig()
    for line, stmt in _statements(_active_text(text)):
        try:
            _statement(conf, line, stmt)
        except (PerlSyntax, RecursionError):  # deep nesting is not a config either
            conf.unknown.append((line, _first_line(stmt)))
    return conf


def _statement(conf: PerlConfig, line: int, stmt: str) -> None:
    stmt = stmt.strip()
    stmt = stmt[:-1].rstrip() if stmt.endswith(";") else stmt
    if stmt in ("", "1") or re.match(r"use\s+(strict|vars|warnings)\b", stmt):
        return
    m = _ELEMENT.match(stmt)
    if m:
        value = _Expr(_tokens(m.group(3)), conf.scalars).parse()
        conf.hashes.setdefault(m.group(1), {})[m.group(2)] = value
        conf.lines[f"${m.group(1)}{{{m.group(2)}}}"] = line
        return
    m = _SCALAR.match(stmt)
    if m:
        conf.scalars[m.group(1)] = _Expr(_tokens(m.group(2)), conf.scalars).parse()
        conf.lines[f"${m.group(1)}"] = line
        return
    m = _ARRAY.match(stmt)
    if m:
        conf.lists[m.group(1)] = _items(m.group(2), conf.scalars)
        conf.lines[f"@{m.group(1)}"] = line
        return
    m = _HASH.match(stmt)
    if m:
        items = _items(m.group(2), conf.scalars)
        conf.hashes[m.group(1)] = dict(zip(items[::2], items[1::2]))
        conf.lines[f"%{m.group(1)}"] = line
        return
    m = _SUB.match(stmt)
    if m:
        body = m.group(2).strip().rstrip(";").strip()
        only = re.fullmatch(r"'([^'\\]*)'|\"([^\"\\$@]*)\"", body)
        conf.subs[m.group(1)] = (only.group(1) or only.group(2) or "") if only else None
        conf.lines[f"sub {m.group(1)}"] = line
        return
    m = _USE.match(stmt)
    if m:
        conf.modules.append(m.group(1))
        return
    raise PerlSyntax("not an assignment")


def _first_line(stmt: str) -> str:
    first = stmt.split("\n", 1)[0].strip()
    return first if len(first) <= 72 else first[:69] + "..."
