"""Property test of the dim parser (hypothesis): any expression over integers and names,
with + - * / and parentheses, either parses to the value the arithmetic gives, printing and
parsing back to the same dim, or is refused with an IRParseError at its line:col; a constant
that is negative, fractional or a division by zero is always refused."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusegraph.compiler import Dim, IRParseError
from fusegraph.dialect import parse

Expr = tuple  # ("int", v) | ("name", s) | (op, left, right) | ("paren", e)

_leaf = st.one_of(
    st.tuples(st.just("int"), st.integers(0, 40)), st.tuples(st.just("name"), st.sampled_from("nm"))
)
_expr = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.tuples(st.sampled_from("+-*/"), inner, inner),
        st.tuples(st.just("paren"), inner),
    ),
    max_leaves=8,
)


def _text(e: Expr) -> str:
    if e[0] == "int":
        return str(e[1])
    if e[0] == "name":
        return e[1]
    if e[0] == "paren":
        return "(" + _text(e[1]) + ")"
    return f"({_text(e[1])}) {e[0]} ({_text(e[2])})"  # parenthesized: the text means the tree


def _value(e: Expr, env: dict[str, int]) -> Fraction | None:
    if e[0] == "int":
        return Fraction(e[1])
    if e[0] == "name":
        return Fraction(env[e[1]])
    if e[0] == "paren":
        return _value(e[1], env)
    a, b = _value(e[1], env), _value(e[2], env)
    if a is None or b is None or (e[0] == "/" and b == 0):
        return None
    return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else a}[e[0]]


def _module(dim: str) -> str:
    return (
        "builtin.module {\n  func.func @f() {\n"
        f'    %0 = fg.weight "w" : !fg.tensor<[{dim}], f32, cpu>\n    func.return\n  }}\n}}\n'
    )


def _parsed_dim(text: str) -> Dim:
    graph = parse(_module(text), "d.mlir")
    return graph.weights["w"].shape[0]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_expr)
def test_dims__parse_to_the_arithmetic_or_refuse_with_a_location(e: Expr) -> None:
    text = _text(e)
    symbolic = "n" in text or "m" in text
    constant = None if symbolic else _value(e, {})
    try:
        dim = _parsed_dim(text)
    except IRParseError as err:
        assert str(err).startswith("d.mlir:3:"), str(err)
        if not symbolic:  # a constant is refused only when it is not a whole number >= 0
            assert constant is None or constant < 0 or constant.denominator != 1, (text, constant)
        return
    if not symbolic:
        assert constant is not None and dim == int(constant), (text, dim, constant)
    for env in ({"n": 3, "m": 5}, {"n": 8, "m": 1}):
        want = _value(e, env)
        got = dim.expr.subs({s: env[str(s)] for s in dim.expr.free_symbols})
        if want is not None and got.is_finite:
            assert Fraction(str(got)) == want, (text, env, got, want)
    assert _parsed_dim(str(dim)) == dim  # prints and parses back


def test_dims__precedence_and_what_sympy_prints() -> None:
    cases = {"2 + 3 * 4": "14", "8/2*2": "8", "8/2/2": "2", "-m + n": "-m + n", "n*n": "n**2",
             "-n**2 + n": "-n**2 + n", "2*n**2/3*m": "2*m*n**2/3", "n**(-2)": "n**(-2)", "--n": "n"}  # fmt: skip
    for text, printed in cases.items():
        assert str(_parsed_dim(text)) == printed, text
