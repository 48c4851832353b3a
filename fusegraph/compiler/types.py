"""The `!fg.tensor` and `!fg.buffer` types.

Both print as `<[dims], dtype, device>`, for example
`!fg.tensor<[total_seq_len, 4096], bf16, gpu:0>`. Dims are integers, names, or
algebraic expressions over names (`32*total_seq_len`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import sympy
from xdsl.ir import Data, ParametrizedAttribute, SSAValue, TypeAttribute
from xdsl.irdl import irdl_attr_definition
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.utils.mlir_lexer import MLIRTokenKind

from fusegraph.compiler.devices import DeviceRef
from fusegraph.compiler.dims import Dim, DimLike, dim_problem, dims_of, product, symbol_expr
from fusegraph.compiler.dtypes import DType


@irdl_attr_definition
class DTypeAttr(Data[DType]):
    """A DType as an attribute (`#fg.dtype<bf16>`), used by cast and custom ops."""

    name = "fg.dtype"

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> DType:
        with parser.in_angle_brackets():
            return _parse_dtype(parser)

    def print_parameter(self, printer: Printer) -> None:
        printer.print_string(f"<{self.data.value}>")


@irdl_attr_definition
class ShapeAttr(Data[tuple[Dim, ...]]):
    """A shape: a tuple of Dims."""

    name = "fg.shape"

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> tuple[Dim, ...]:
        with parser.in_angle_brackets():
            return _parse_shape(parser)

    def print_parameter(self, printer: Printer) -> None:
        printer.print_string(f"<{shape_str(self.data)}>")


@irdl_attr_definition
class DeviceAttr(Data[DeviceRef]):
    """A DeviceRef as an attribute."""

    name = "fg.device"

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> DeviceRef:
        with parser.in_angle_brackets():
            return _parse_device(parser)

    def print_parameter(self, printer: Printer) -> None:
        printer.print_string(f"<{self.data}>")


class _ShapedType(ParametrizedAttribute, TypeAttribute):
    """Shared parts of TensorType and BufferType: dtype, shape of Dims, device."""

    KIND: ClassVar[str] = ""
    # Subclasses redeclare the three parameters: xDSL's generated equality only sees the
    # fields declared on the decorated class itself.
    element_dtype: DTypeAttr
    dims: ShapeAttr
    device_attr: DeviceAttr

    def _init_params(
        self,
        dtype: DType | DTypeAttr,
        shape: Sequence[DimLike] | ShapeAttr,
        device: DeviceRef | DeviceAttr | None = None,
    ) -> None:
        if not isinstance(dtype, (DType, DTypeAttr)):
            raise TypeError(f"{self.KIND}: dtype must be a DType, got {dtype!r}")
        device = device if device is not None else DeviceRef.CPU()
        super().__init__(
            DTypeAttr.get(dtype) if isinstance(dtype, DType) else dtype,
            shape if isinstance(shape, ShapeAttr) else ShapeAttr(dims_of(shape)),
            device if isinstance(device, DeviceAttr) else DeviceAttr(device),
        )

    @property
    def dtype(self) -> DType:
        """The element type."""
        return self.element_dtype.data

    @property
    def shape(self) -> tuple[Dim, ...]:
        """The dims, outermost first."""
        return self.dims.data

    @property
    def device(self) -> DeviceRef:
        """Where the data lives."""
        return self.device_attr.data

    @property
    def rank(self) -> int:
        """The number of dims."""
        return len(self.shape)

    @property
    def num_elements(self) -> Dim:
        """The product of the dims."""
        return product(self.shape)

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[DTypeAttr | ShapeAttr | DeviceAttr]:
        with parser.in_angle_brackets():
            shape = _parse_shape(parser)
            parser.parse_punctuation(",")
            dtype = _parse_dtype(parser)
            parser.parse_punctuation(",")
            device = _parse_device(parser)
        return (DTypeAttr(dtype), ShapeAttr(shape), DeviceAttr(device))

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string(f"<{shape_str(self.shape)}, {self.dtype.value}, {self.device}>")

    def __str__(self) -> str:
        return f"!{self.name}<{shape_str(self.shape)}, {self.dtype.value}, {self.device}>"


@irdl_attr_definition
class TensorType(_ShapedType):
    """An immutable tensor value: `!fg.tensor<[total_seq_len, 64], f32, cpu>`.

    Example:
        >>> TensorType(DType.float32, ["batch", 64], DeviceRef.CPU())
    """

    name = "fg.tensor"
    KIND: ClassVar[str] = "TensorType"
    element_dtype: DTypeAttr
    dims: ShapeAttr
    device_attr: DeviceAttr

    def __init__(
        self,
        dtype: DType | DTypeAttr,
        shape: Sequence[DimLike] | ShapeAttr,
        device: DeviceRef | DeviceAttr | None = None,
    ) -> None:
        self._init_params(dtype, shape, device)


@irdl_attr_definition
class BufferType(_ShapedType):
    """A mutable buffer (the paged KV blocks): `!fg.buffer<[64, 2, 1, 16, 2, 16], f32, cpu>`.

    Ops that write a buffer take its current version and return the next one, so the IR
    stays functional; the runtime writes in place into the caller's storage.
    """

    name = "fg.buffer"
    KIND: ClassVar[str] = "BufferType"
    element_dtype: DTypeAttr
    dims: ShapeAttr
    device_attr: DeviceAttr

    def __init__(
        self,
        dtype: DType | DTypeAttr,
        shape: Sequence[DimLike] | ShapeAttr,
        device: DeviceRef | DeviceAttr | None = None,
    ) -> None:
        self._init_params(dtype, shape, device)


def tensor_type(value: SSAValue) -> TensorType:
    """`value.type` as a TensorType (xDSL types SSA values as `Attribute`).

    Raises:
        TypeError: naming the value's type when it is not a `!fg.tensor`.
    """
    if not isinstance(t := value.type, TensorType):
        raise TypeError(f"expected a !fg.tensor value, got {value.name_hint or 'a value'} of type {t}")
    return t


def buffer_type(value: SSAValue) -> BufferType:
    """`value.type` as a BufferType, or a TypeError naming the value's type."""
    if not isinstance(t := value.type, BufferType):
        raise TypeError(f"expected a !fg.buffer value, got {value.name_hint or 'a value'} of type {t}")
    return t


def shaped_type(value: SSAValue) -> TensorType | BufferType:
    """`value.type` as a TensorType or BufferType, or a TypeError naming the value's type."""
    if not isinstance(t := value.type, (TensorType, BufferType)):
        raise TypeError(f"expected an fg value, got {value.name_hint or 'a value'} of type {t}")
    return t


def shape_str(shape: Sequence[Dim]) -> str:
    """`[a, b, 3]`: how the IR prints a shape (also used by error messages)."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _parse_dtype(parser: AttrParser) -> DType:
    pos = parser.pos
    spelling = parser.parse_identifier(" dtype (f32, f16, bf16, i8, u8, i32, u32, i64, bool)")
    try:
        return DType.from_spelling(spelling)
    except ValueError as err:
        parser.raise_error(str(err), pos, parser.pos)


def _parse_device(parser: AttrParser) -> DeviceRef:
    pos = parser.pos
    kind = parser.parse_identifier(" device (cpu or gpu:N)")
    if kind == "cpu":
        return DeviceRef.CPU()
    if kind != "gpu":
        parser.raise_error(f"unknown device {kind!r}; allowed: cpu, gpu:N", pos, parser.pos)
    parser.parse_punctuation(":")
    return DeviceRef.GPU(parser.parse_integer(allow_boolean=False, allow_negative=False))


_MAX_DIM_DEPTH = 64  # parentheses in one dim; deeper is refused, not a RecursionError


def _parse_shape(parser: AttrParser) -> tuple[Dim, ...]:
    return tuple(parser.parse_comma_separated_list(parser.Delimiter.SQUARE, lambda: _parse_dim(parser)))


def _parse_dim(parser: AttrParser) -> Dim:
    start = parser.pos
    expr = _parse_sum(parser, 0)
    if (problem := dim_problem(expr)) is not None:
        parser.raise_error(f"invalid dim: {problem}", start, parser.pos)
    return Dim(expr)


def _parse_sum(parser: AttrParser, depth: int) -> sympy.Expr:
    expr = _parse_product(parser, depth)
    while True:
        if parser.parse_optional_punctuation("+") is not None:
            expr = expr + _parse_product(parser, depth)
        elif parser._current_token.kind == MLIRTokenKind.MINUS:  # noqa: SLF001
            parser._consume_token()  # noqa: SLF001
            expr = expr - _parse_product(parser, depth)
        else:
            return expr


def _parse_product(parser: AttrParser, depth: int) -> sympy.Expr:
    # Factors joined by * and /, each with an optional unary minus (sympy prints `-m + n`);
    # `**` (sympy prints n*n as `n**2`) binds to the last factor, tighter than its minus.
    expr: sympy.Expr | None = None  # the factors folded so far (None: none yet)
    divide, powered = False, False
    negative, last = _parse_signed_atom(parser, depth)

    def fold() -> sympy.Expr:
        factor = -last if negative else last
        if expr is None:  # most dims are one name or one integer: no sympy arithmetic
            return factor
        return expr / factor if divide else expr * factor

    while True:
        if parser.parse_optional_punctuation("*") is not None:
            if parser.parse_optional_punctuation("*") is not None:
                if powered:
                    parser.raise_error("`a**b**c` is ambiguous: add parentheses")
                last, powered = _power(parser, last, _parse_atom(parser, depth)), True
                continue
            expr, divide, powered = fold(), False, False
            negative, last = _parse_signed_atom(parser, depth)
        elif parser.parse_optional_punctuation("/") is not None:
            expr, divide, powered = fold(), True, False
            negative, last = _parse_signed_atom(parser, depth)
        else:
            return fold()


def _parse_signed_atom(parser: AttrParser, depth: int) -> tuple[bool, sympy.Expr]:
    negative = False
    while parser._current_token.kind == MLIRTokenKind.MINUS:  # noqa: SLF001
        parser._consume_token()  # noqa: SLF001
        negative = not negative
    return negative, _parse_atom(parser, depth)


_MAX_EXPONENT = 64


def _power(parser: AttrParser, base: sympy.Expr, exponent: sympy.Expr) -> sympy.Expr:
    """`base**exponent` as sympy prints it: a whole exponent of a dim name, at most 64."""
    if not exponent.is_Integer or not base.free_symbols:
        parser.raise_error("`**` takes a dim name (or an expression over names) and a whole exponent")
    result = base**exponent
    if any(abs(p.exp) > _MAX_EXPONENT for p in result.atoms(sympy.Pow) if p.exp.is_Integer):
        parser.raise_error(f"dim exponent above {_MAX_EXPONENT}")
    return result


def _parse_atom(parser: AttrParser, depth: int) -> sympy.Expr:
    if parser.parse_optional_punctuation("(") is not None:
        if depth >= _MAX_DIM_DEPTH:
            parser.raise_error(f"dim expression nests deeper than {_MAX_DIM_DEPTH} parentheses")
        expr = _parse_sum(parser, depth + 1)
        parser.parse_punctuation(")")
        return expr
    if (value := parser.parse_optional_integer(allow_boolean=False, allow_negative=False)) is not None:
        return sympy.Integer(value)
    if (name := parser.parse_optional_identifier()) is not None:
        return symbol_expr(name)
    parser.raise_error("expected a dim: an integer, a name, or an expression over names")
