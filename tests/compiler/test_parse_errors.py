"""The parser says only diagnostics: every bad input of issue #14 is an IRParseError or an
IRVerifyError whose message starts with `file:line:col`, and none of them hangs."""

from __future__ import annotations

import re
import time

import pytest

from fusegraph import DeviceRef, DType, Graph, TensorType, ops
from fusegraph.compiler import IRParseError, IRVerifyError
from fusegraph.dialect import parse, read_ir_file
from fusegraph.passes import PassFailedError, PassManager

T = "!fg.tensor<[4, 8], f32, cpu>"


def _func(body: str, args: str = f"%0: {T}", results: str = T) -> str:
    return f"builtin.module {{\n  func.func @f({args}) -> {results} {{\n{body}\n  }}\n}}\n"


def _raises(kind: type[Exception], text: str, line: int, message: str) -> str:
    """Parse `text` as x.mlir; assert `kind` at `x.mlir:<line>:<col>` with `message` in it."""
    with pytest.raises(kind) as err:
        parse(text, "x.mlir")
    first = str(err.value).splitlines()[0]
    assert re.match(rf"x\.mlir:{line}:\d+", first), first
    assert message in str(err.value), str(err.value)
    return str(err.value)


# --- hangs --------------------------------------------------------------------------------
@pytest.mark.parametrize("tail", ["", "\n    func.return", "\\q rest", "\\"])
def test_unterminated_string__fails_fast_at_its_line_and_column(tail: str) -> None:
    text = '    "' + "a" * 200 + tail  # xDSL 0.74's lexer took ~2x longer per character
    start = time.perf_counter()
    msg = _raises(IRParseError, _func(text), 3, "string literal")
    assert time.perf_counter() - start < 5.0  # a hang guard, not a speed check: 2**200 steps before
    assert msg.startswith("x.mlir:3:5:") or msg.startswith("x.mlir:3:")


def test_canonicalize__refuses_an_op_that_uses_its_own_result_instead_of_looping() -> None:
    with Graph("g", input_types=[TensorType(DType.float32, [4, 4], DeviceRef.CPU())]) as g:
        (x,) = g.inputs
        g.output(ops.permute(ops.permute(x, [1, 0]), [1, 0]))
    inner = g.block.first_op
    assert inner is not None and inner.name == "fg.permute"
    inner.operands = [inner.results[0]]  # what `%1 = fg.permute %1` parses to, built by hand
    with pytest.raises(PassFailedError, match="fg.permute uses its own result as operand 0"):
        PassManager("canonicalize", verify_each=False).run(g)
    with pytest.raises(IRVerifyError, match="uses its own result"):
        g.verify()


# --- accepted invalid IR ----------------------------------------------------------------
def test_value_used_before_it_is_defined() -> None:
    body = f"    %1 = fg.neg %2 : {T} -> {T}\n    %2 = fg.neg %0 : {T} -> {T}\n    func.return %1 : {T}"
    _raises(IRVerifyError, _func(body), 3, "fg.neg: operand 0 is used before it is defined")


def test_op_using_its_own_result() -> None:
    body = f"    %1 = fg.permute %1 {{perm = array<i64: 1, 0>}} : {T} -> {T}\n    func.return %1 : {T}"
    _raises(IRVerifyError, _func(body), 3, "fg.permute uses its own result as operand 0")


@pytest.mark.parametrize(
    ("dim", "why"),
    [
        ("3-11", "evaluates to -8, below zero"),
        ("8/0", "division by zero"),
        ("1/2", "1/2, not a whole number"),
    ],
)
def test_dim_expressions_below_zero_or_not_whole(dim: str, why: str) -> None:
    text = _func("    func.return", args=f"%0: !fg.tensor<[4, {dim}], f32, cpu>", results="()")
    msg = _raises(IRParseError, text.replace("-> () ", ""), 2, why)
    assert msg.startswith("x.mlir:2:")


def test_algebraic_dims_on_function_inputs() -> None:
    text = _func("    func.return", args="%0: !fg.tensor<[2*n, 4], f32, cpu>", results="()").replace(
        "-> () ", ""
    )
    _raises(IRVerifyError, text, 2, "func @f: input 0 has algebraic dims ['2*n']")


def test_two_functions_or_none() -> None:
    one = _func(f"    func.return %0 : {T}")
    two = one.replace(
        "}\n}\n",
        "}\n"
        + one.splitlines(keepends=True)[1].replace("@f", "@g")
        + "    func.return %0 : "
        + T
        + "\n  }\n}\n",
    )
    _raises(IRVerifyError, two, 5, "exactly one func.func, found 2 (@f, @g)")
    _raises(IRVerifyError, "builtin.module {\n}\n", 1, "exactly one func.func, found none")


# --- raw exceptions that leaked ---------------------------------------------------------
@pytest.mark.parametrize(
    ("op", "message"),
    [
        ('fg.softmax %0 {axis = "x"}', '"x" should be of base attribute integer'),
        ("fg.softmax %0 {axis = 99999999999999999999 : i64}", "out of range for type i64"),
        ("fg.permute %0 {perm = array<i664: 1, 0>}", "NotImplementedError"),
    ],
)
def test_xdsl_exceptions_become_parse_errors_with_a_location(op: str, message: str) -> None:
    _raises(IRParseError, _func(f"    %1 = {op} : {T} -> {T}\n    func.return %1 : {T}"), 3, message)


def test_a_buffer_where_a_tensor_belongs() -> None:
    buf = "!fg.buffer<[4, 8], f32, cpu>"
    text = _func(f"    %1 = fg.neg %0 : {buf} -> {T}\n    func.return %1 : {T}", args=f"%0: {buf}")
    _raises(IRParseError, text, 3, "should be of base attribute fg.tensor")


def test_2000_nested_parentheses_in_a_dim() -> None:
    dim = "(" * 2000 + "n" + ")" * 2000
    text = _func("    func.return", args=f"%0: !fg.tensor<[4, {dim}], f32, cpu>", results="()")
    _raises(IRParseError, text.replace("-> () ", ""), 2, "nests deeper than 64 parentheses")


def test_a_non_utf8_file_names_the_line_and_column(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.mlir"
    path.write_bytes(b"builtin.module {\n  // caf\xe9\n}\n")
    with pytest.raises(
        IRParseError, match=rf"{re.escape(str(path))}:2:9: the file is not UTF-8 text \(byte 0xe9\)"
    ):
        read_ir_file(str(path))


def test_valid_ir_still_round_trips_with_odd_but_legal_dims() -> None:
    text = _func("    func.return", args="%0: !fg.tensor<[n, ((4))], f32, cpu>", results="()").replace(
        "-> () ", ""
    )
    assert "!fg.tensor<[n, 4], f32, cpu>" in str(parse(text))


def test_2000_nested_brackets_in_an_attribute() -> None:  # xDSL recursed until RecursionError
    op = "fg.softmax %0 {axis = " + "[" * 2000 + "1" + "]" * 2000 + "}"
    _raises(
        IRParseError, _func(f"    %1 = {op} : {T} -> {T}\n    func.return %1 : {T}"), 3, "nests too deeply"
    )


def test_a_character_the_lexer_refuses_first_in_the_file() -> None:
    # xDSL lexes the first token while the parser is built (fuzzer: a NUL byte at 1:1)
    _raises(IRParseError, "\x00" + _func("    func.return %0 : " + T), 1, "Unexpected character")
