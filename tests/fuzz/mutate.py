"""Mutations of printed IR: small, grammar-aware edits that make text almost right.

Each mutation takes the text and a `random.Random` and returns new bytes (a mutant may be
invalid UTF-8). They aim at the holes the parser had: unterminated strings, SSA values used
before they are defined or by their own op, bad dims (`3-11`, `8/0`, `1/2`, deep nesting),
out-of-range integers, odd integer widths (`array<i664: ...>`), a buffer where a tensor
belongs, a string where an integer belongs, and plain character noise.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

_SSA = re.compile(r"%[0-9]+")
_NUMBER = re.compile(r"(?<![%\w])-?[0-9]+")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_DIMS = re.compile(r"<\[([^\]]*)\]")

_NOISE = list('"%@!<>[](){}:,=-+*/\\#^.0123456789abcxyz \n\t') + ["é", "\x00", "\u202e"]
_NUMBERS = [
    "0", "-1", "1", "2", "63", "64", "9223372036854775807", "9223372036854775808",
    "18446744073709551616", "99999999999999999999", "1" + "0" * 60, "-9223372036854775809",
]  # fmt: skip
_DIM_EXPRS = [
    "3-11", "8/0", "1/2", "0/0", "2*n", "n-11", "n/2", "(n)", "((4))", "n*0", "-4", "4-4",
    "(" * 300 + "n" + ")" * 300, "n+", "*4", "total_seq_len*total_seq_len", "1/n",
]  # fmt: skip
_SWAPS = [
    ("!fg.tensor", "!fg.buffer"), ("!fg.buffer", "!fg.tensor"), ("i64", "i664"), ("i64", "i1"),
    ("i64", "i32"), ("f32", "f64"), ("f32", "i8"), ("cpu", "gpu:0"), ("cpu", "tpu"),
    ("array<i64", "array<i664"), ("= false", "= 3"), ("= true", '= "x"'), (": i64", ""),
    ("func.return", "fg.neg"), ("func.func", "func.funk"), ("->", ","), ("{", ""), ("}", ""),
    ('"', ""), ("u32", "bool"), ("fg.", "fg.fg."), (", ", ",,"),
]  # fmt: skip


def _replace_match(text: str, rng: random.Random, pattern: re.Pattern[str], new: Callable[[str], str]) -> str:
    found = list(pattern.finditer(text))
    if not found:
        return text
    m = rng.choice(found)
    return text[: m.start()] + new(m.group(0)) + text[m.end() :]


def ssa_swap(text: str, rng: random.Random) -> str:
    """Use another SSA value: often one defined later (use before def) or the op's own."""
    names = sorted(set(_SSA.findall(text)))
    return _replace_match(text, rng, _SSA, lambda _: rng.choice(names))


def self_use(text: str, rng: random.Random) -> str:
    """`%n = op %m` -> `%n = op %n`: an op using its own result."""
    lines = text.splitlines(keepends=True)
    defs = [i for i, line in enumerate(lines) if re.match(r"\s*%[0-9]+(, %[0-9]+)* = ", line)]
    if not defs:
        return text
    i = rng.choice(defs)
    own = _SSA.search(lines[i])
    head, sep, tail = lines[i].partition(" = ")
    assert own is not None
    lines[i] = head + sep + _SSA.sub(own.group(0), tail, count=1)
    return "".join(lines)


def number(text: str, rng: random.Random) -> str:
    """Replace an integer with an edge value (out of i64 range, negative, huge)."""
    return _replace_match(text, rng, _NUMBER, lambda _: rng.choice(_NUMBERS))


def dim(text: str, rng: random.Random) -> str:
    """Replace one dim of a type with an odd expression."""

    def bend(shape: str) -> str:
        dims = shape[2:-1].split(", ") if shape[2:-1] else []
        pick = rng.choice(_DIM_EXPRS)
        if dims:
            dims[rng.randrange(len(dims))] = pick
        else:
            dims = [pick]
        return "<[" + ", ".join(dims) + "]"

    return _replace_match(text, rng, _DIMS, bend)


def swap(text: str, rng: random.Random) -> str:
    """Replace one occurrence of a type, keyword or punctuation with a wrong one."""
    old, new = rng.choice(_SWAPS)
    spots = [m.start() for m in re.finditer(re.escape(old), text)]
    if not spots:
        return text
    at = rng.choice(spots)
    return text[:at] + new + text[at + len(old) :]


def word(text: str, rng: random.Random) -> str:
    """Replace an identifier with another identifier of the file (an op name with a dtype...)."""
    words = sorted(set(_WORD.findall(text)))
    return _replace_match(text, rng, _WORD, lambda _: rng.choice(words))


def noise(text: str, rng: random.Random) -> str:
    """Insert, delete or replace a few characters."""
    chars = list(text)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(chars) + 1)
        kind = rng.randrange(3)
        if kind == 0 or not chars:
            chars.insert(at, rng.choice(_NOISE))
        elif kind == 1 and at < len(chars):
            del chars[at]
        elif at < len(chars):
            chars[at] = rng.choice(_NOISE)
    return "".join(chars)


def unterminated_string(text: str, rng: random.Random) -> str:
    """Open a string literal that never closes (xDSL 0.74's lexer was exponential on it)."""
    at = rng.randrange(len(text) + 1)
    body = "".join(rng.choice("abcdefghij_ ") for _ in range(rng.randint(10, 60)))
    tail = rng.choice(["", "\n", "\\q", "\\", "\\4"])
    return text[:at] + '"' + body + tail + text[at:]


def lines(text: str, rng: random.Random) -> str:
    """Delete, duplicate or swap whole lines."""
    rows = text.splitlines(keepends=True)
    i, j = rng.randrange(len(rows)), rng.randrange(len(rows))
    kind = rng.randrange(3)
    if kind == 0:
        del rows[i]
    elif kind == 1:
        rows.insert(j, rows[i])
    else:
        rows[i], rows[j] = rows[j], rows[i]
    return "".join(rows)


def truncate(text: str, rng: random.Random) -> str:
    """Cut the text anywhere."""
    return text[: rng.randrange(len(text))]


def nest(text: str, rng: random.Random) -> str:
    """Nest something deeply: parentheses in a dim, or brackets in an attribute."""
    depth = rng.choice([70, 500, 2000])
    if rng.random() < 0.5:
        return _replace_match(
            text, rng, _DIMS, lambda s: "<[" + "(" * depth + "4" + ")" * depth + ", " + s[2:]
        )
    return _replace_match(text, rng, re.compile(r"\{[a-z_]+ = "), lambda s: s + "[" * depth)


MUTATIONS: tuple[Callable[[str, random.Random], str], ...] = (
    ssa_swap, self_use, number, dim, swap, word, noise, unterminated_string, lines, truncate, nest,
)  # fmt: skip


def mutate(text: str, rng: random.Random) -> bytes:
    """One mutant of `text`: one to three mutations, sometimes with a stray non-UTF-8 byte."""
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        text = rng.choice(MUTATIONS)(text, rng) or text
    data = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.03:
        at = rng.randrange(len(data) + 1)
        data = data[:at] + bytes([rng.choice([0x80, 0xC3, 0xFF, 0xFE])]) + data[at:]
    return data
