"""Reading text IR back into a Graph, with `file:line:col` errors."""

from __future__ import annotations

import functools

from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.dialects.func import Func
from xdsl.ir import Attribute, Dialect
from xdsl.parser import Parser
from xdsl.utils.exceptions import ParseError, VerifyException

from fusegraph.compiler.errors import IRParseError, IRVerifyError
from fusegraph.compiler.graph import Graph


def fg_dialect() -> Dialect:
    """The `fg` dialect: every registered op, type and attribute."""
    from fusegraph.compiler.opbase import registered_attrs, registered_ops
    from fusegraph.compiler.types import BufferType, DeviceAttr, DTypeAttr, ShapeAttr, TensorType

    attrs: list[type[Attribute]] = [TensorType, BufferType, DTypeAttr, ShapeAttr, DeviceAttr]
    attrs += registered_attrs()
    return Dialect("fg", registered_ops(), attrs)


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


def parse_module(text: str, filename: str = "<string>") -> ModuleOp:
    """Parse IR text into a verified ModuleOp."""
    try:
        module = Parser(_cached_context(), text, name=filename).parse_module()
    except ParseError as err:
        raise IRParseError(str(err)) from None
    try:
        module.verify()
    except VerifyException as err:
        raise IRVerifyError(f"{filename}: {err}") from None
    return module


def parse(text: str, filename: str = "<string>") -> Graph:
    """Parse the text printed by `str(graph)` back into a Graph.

    Malformed text raises IRParseError whose message starts with `filename:line:col`;
    well-formed text that breaks a shape rule raises IRVerifyError.
    """
    return Graph(name="", module=parse_module(text, filename))
