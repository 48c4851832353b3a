"""The `fg` dialect, and reading text IR back into a Graph with `file:line:col` errors.

This is the one module that imports the op families to assemble the dialect (xDSL's
`Dialect(...)` placement): the IR core (`fusegraph.compiler`) never imports them.

The parser only ever raises the two diagnostics, each naming `file:line:col`:
`IRParseError` for text that does not parse (including every exception xDSL raises while
parsing: a `VerifyException` from an attribute, a `NotImplementedError`, a `RecursionError`)
and `IRVerifyError` for a well-formed module that breaks a rule (an op's shape rule, or a
structural rule of `structure.py`: one function, values defined before use, fg inputs).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.dialects.func import Func
from xdsl.ir import Attribute, Dialect, Operation
from xdsl.parser import Parser
from xdsl.utils.exceptions import ParseError

import fusegraph.ops  # noqa: F401 - importing the op families registers them
from fusegraph.compiler.errors import IRParseError, IRVerifyError
from fusegraph.compiler.graph import Graph
from fusegraph.compiler.opbase import registered_ops
from fusegraph.compiler.structure import structure_problems
from fusegraph.compiler.types import BufferType, DeviceAttr, DTypeAttr, ShapeAttr, TensorType

_FG_ATTRS: list[type[Attribute]] = [TensorType, BufferType, DTypeAttr, ShapeAttr, DeviceAttr]


def fg_dialect() -> Dialect:
    """The `fg` dialect: every op class registered (the op families and any plugin op
    imported before the call), and the fg types and attributes."""
    return Dialect("fg", registered_ops(), _FG_ATTRS)


@functools.lru_cache(maxsize=1)
def _cached_context() -> Context:
    ctx = Context()
    ctx.load_dialect(Builtin)
    ctx.load_dialect(Func)
    ctx.load_dialect(fg_dialect())
    return ctx


def make_context() -> Context:
    """An xDSL Context with builtin, func and fg loaded (a fresh copy)."""
    return _cached_context().clone()


class _Source:
    """The text being parsed, to turn an offset into `file:line:col` and a caret line."""

    def __init__(self, text: str, filename: str) -> None:
        self.text, self.filename = text, filename

    def where(self, offset: int) -> str:
        line = self.text.count("\n", 0, offset) + 1
        col = offset - (self.text.rfind("\n", 0, offset) + 1) + 1
        return f"{self.filename}:{line}:{col}"

    def message(self, offset: int, what: str) -> str:
        """`file:line:col: what`, then the source line and a caret under the column."""
        start = self.text.rfind("\n", 0, offset) + 1
        end = self.text.find("\n", offset)
        source = self.text[start : end if end >= 0 else len(self.text)]
        return f"{self.where(offset)}: {what}\n{source}\n{' ' * (offset - start)}^"


# xDSL 0.74's lexer matches string literals with r'"(?:[^"\\\n\v\f]+|\\(?:["nt\\]|[0-9A-Fa-f]{2}))*"',
# a nested quantifier that backtracks exponentially when the closing quote is missing
# (about 2x per character). Upstream reproducer (xDSL 0.74, CPython 3.11): 0.16 s at n=20,
# 0.7 s at 22, 2.7 s at 24, about 3 min at 30:
#     import re; re.compile(r'"(?:[^"\\\n\v\f]+|\\(?:["nt\\]|[0-9A-Fa-f]{2}))*"').match('"' + 'a' * 24)
#     from xdsl.context import Context; from xdsl.parser import Parser
#     Parser(Context(), '"' + 'a' * 24).parse_module()
# Dropping the inner `+` makes it linear. We do not patch xDSL: every literal is checked
# here first, so xDSL only ever sees literals that match at once.
def _check_string_literals(src: _Source) -> None:
    text, i, n = src.text, 0, len(src.text)
    while (i := _next_quote_or_comment(text, i)) < n:
        if text[i] == "/":  # a `//` comment runs to the end of the line
            i = text.find("\n", i)
            i = n if i < 0 else i
            continue
        start, i = i, i + 1
        while True:
            if i >= n or text[i] in "\n\v\f":
                raise IRParseError(src.message(start, "string literal is not closed on its line"))
            if text[i] == '"':
                i += 1
                break
            if text[i] == "\\":
                escape = text[i + 1 : i + 3]
                if escape[:1] in ('"', "n", "t", "\\"):
                    i += 2
                    continue
                if len(escape) == 2 and all(c in "0123456789abcdefABCDEF" for c in escape):
                    i += 3
                    continue
                raise IRParseError(src.message(i, f"invalid escape {text[i : i + 2]!r} in a string literal"))
            i += 1


def _next_quote_or_comment(text: str, i: int) -> int:
    """Offset of the next `"` or `//` at or after `i` (len(text) when none)."""
    found = _QUOTE_OR_COMMENT.search(text, i)
    return found.start() if found is not None else len(text)


_QUOTE_OR_COMMENT = re.compile(r'"|//')


class _LocatingParser(Parser):
    """xDSL's parser, remembering where each op starts and which op is being parsed."""

    def __init__(self, ctx: Context, text: str, name: str) -> None:
        super().__init__(ctx, text, name)
        self.op_offsets: dict[Operation, int] = {}
        self.open_ops: list[int] = []

    def parse_operation(self) -> Operation:
        start = self._current_token.span.start
        self.open_ops.append(start)
        op = super().parse_operation()
        self.open_ops.pop()
        self.op_offsets[op] = start
        return op


def parse_module(text: str, filename: str = "<string>") -> ModuleOp:
    """Parse IR text into a verified graph module (one `func.func`).

    Raises:
        IRParseError: the text does not parse; the message starts with `filename:line:col`.
        IRVerifyError: it parses but breaks a rule; the message starts with `filename:line:col`.
    """
    src = _Source(text, filename)
    _check_string_literals(src)
    try:  # the constructor lexes the first token (a NUL byte there is a ParseError)
        parser = _LocatingParser(_cached_context(), text, filename)
    except ParseError as err:
        raise IRParseError(str(err)) from None
    try:
        module = parser.parse_module()
    except ParseError as err:
        raise IRParseError(str(err)) from None
    except Exception as err:  # xDSL raises many kinds while it builds attributes and ops
        offset = parser.open_ops[-1] if parser.open_ops else parser.pos
        raise IRParseError(src.message(offset, _describe(err))) from None
    _verify(module, src, parser.op_offsets)
    return module


def _verify(module: ModuleOp, src: _Source, offsets: dict[Operation, int]) -> None:
    for problem in structure_problems(module):
        offset = offsets.get(problem.op, 0) if problem.op is not None else 0
        raise IRVerifyError(src.message(offset, problem.message))
    for op in module.walk():
        try:
            op.verify(verify_nested_ops=False)
        except Exception as err:  # a shape rule may raise anything; it is the op's fault
            raise IRVerifyError(src.message(offsets.get(op, 0), f"{op.name}: {_describe(err)}")) from None


def _describe(err: Exception) -> str:
    if isinstance(err, RecursionError):
        return "the input nests too deeply to parse"
    text = str(err).strip() or type(err).__name__
    return (
        text if type(err).__name__ in ("VerifyException", "ValueError") else f"{type(err).__name__}: {text}"
    )


def write_ir_file(path: str, text: str) -> None:
    """Write IR text to `path` ('-' = stdout): what `read_ir_file` reads back."""
    if path == "-":
        import sys

        sys.stdout.write(text)
        return
    Path(path).write_text(text, encoding="utf-8")


def read_ir_file(path: str) -> str:
    """The text of an IR file ('-' = stdin). A file that is not UTF-8 is an IRParseError at
    the first bad byte; a missing or unreadable one an OSError (the caller reports it)."""
    if path == "-":
        import sys

        data = sys.stdin.buffer.read()
        path = "<stdin>"
    else:
        data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        good = data[: err.start].decode("utf-8")
        src = _Source(good, path)
        raise IRParseError(
            f"{src.where(len(good))}: the file is not UTF-8 text (byte 0x{data[err.start]:02x})"
        ) from None


def parse(text: str, filename: str = "<string>") -> Graph:
    """Parse the text printed by `str(graph)` back into a Graph.

    Malformed text raises IRParseError whose message starts with `filename:line:col`;
    well-formed text that breaks a shape rule or a structural rule raises IRVerifyError,
    also starting with `filename:line:col`.

    Example:
        >>> g = parse(str(graph), "model.mlir")
        >>> parse('builtin.module { func.func @f() { func.return } }').name
        'f'
    """
    return Graph(name="", module=parse_module(text, filename))
