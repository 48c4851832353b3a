"""`fg.custom`: user-registered ops with a shape rule, a torch implementation (also the
reference and the decomposition) and optional per-device kernels.

Registering a custom op defines a `torch.library` op `fusegraph_custom::<name>` (dots
become underscores) with schema `(Tensor[] operands, str parameters) -> Tensor[]`; the
parameters travel as JSON. Its fake implementation runs the torch implementation on the
fake tensors, and `kernels={"cuda": fn}` registers device kernels with `register_kernel`.

Example:
    >>> register_custom_op(
    ...     "mylib.scaled_add",
    ...     shape_rule=lambda types, params: [types[0]],
    ...     torch_impl=lambda x, y, *, alpha: x + alpha * y,
    ... )
    >>> (z,) = ops.custom("mylib.scaled_add", [x, y], {"alpha": 2})
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
from torch._library.custom_ops import CustomOpDef as LibraryOp
from xdsl.dialects.builtin import (
    DictionaryAttr,
    Float64Type,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    StringAttr,
    i1,
    i64,
)
from xdsl.ir import Attribute
from xdsl.irdl import irdl_op_definition, prop_def, traits_def, var_operand_def, var_result_def
from xdsl.traits import Pure

from fusegraph.compiler.dtypes import DType
from fusegraph.compiler.graph import emit
from fusegraph.compiler.impls import LoweringContext, torch_impl
from fusegraph.compiler.opbase import FgOp, Operand, register_op
from fusegraph.compiler.types import DTypeAttr, TensorType
from fusegraph.compiler.values import TensorValue
from fusegraph.ops._common import expect_tensor

NAMESPACE = "fusegraph_custom"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
ParamValue = bool | int | float | str | DType
#: `(operand types, parameters) -> result types`.
ShapeRule = Callable[[list[TensorType], dict[str, ParamValue]], Sequence[TensorType]]
#: `(*tensors, **parameters) -> a tensor, or one tensor per result`.
TorchFn = Callable[..., torch.Tensor | Sequence[torch.Tensor]]


@dataclass
class CustomOpDef:
    """A registered custom op.

    Attributes:
        name: the symbol the IR names it by (`mylib.scaled_add`).
        shape_rule: `(operand_types, parameters) -> list[TensorType]`.
        torch_impl: `(*tensors, **parameters) -> Tensor | tuple[Tensor, ...]`.
        kernels: device type (`"cuda"`) -> a function with torch_impl's signature.
    """

    name: str
    shape_rule: ShapeRule
    torch_impl: TorchFn
    kernels: dict[str, TorchFn] = field(default_factory=dict)

    @property
    def library_name(self) -> str:
        """The torch.library qualified name, `fusegraph_custom::mylib_scaled_add`."""
        return f"{NAMESPACE}::{self.name.replace('.', '_')}"

    @property
    def library_op(self) -> torch._ops.OpOverload:
        """The torch op (`torch.ops.fusegraph_custom.<name>.default`), e.g. for opcheck."""
        namespace = getattr(torch.ops, NAMESPACE)
        op: torch._ops.OpOverload = getattr(namespace, self.name.replace(".", "_")).default
        return op


_REGISTRY: dict[str, CustomOpDef] = {}
_LIBRARY_OPS: dict[str, LibraryOp] = {}
_KERNEL_DEVICES: dict[str, set[str]] = {}


def register_custom_op(
    name: str,
    shape_rule: ShapeRule,
    torch_impl: TorchFn,
    kernels: Mapping[str, TorchFn] | None = None,
) -> CustomOpDef:
    """Register a custom op under `name`; registering a name again replaces its functions.

    Args:
        name: dotted identifiers, such as "mylib.scaled_add".
        shape_rule: given the operand types and the parameters, the result types; it raises
            ValueError naming the op and operand on bad input.
        torch_impl: the torch implementation `fn(*tensors, **parameters)`; returns a tensor
            or a tuple of tensors, one per result. It is the reference, the CPU kernel, the
            fake implementation (run on fake tensors) and the decomposition.
        kernels: optional device kernels, `{"cuda": fn}`, with torch_impl's signature.

    Returns:
        The CustomOpDef; `library_op` is the torch op to pass to `torch.library.opcheck`.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"register_custom_op: name must be dotted identifiers like 'mylib.op', got {name!r}")
    if not callable(shape_rule) or not callable(torch_impl):
        raise ValueError(f"register_custom_op {name!r}: shape_rule and torch_impl must be callable")
    spec = CustomOpDef(name, shape_rule, torch_impl, dict(kernels or {}))
    _REGISTRY[name] = spec
    _define_library_op(spec)
    return spec


def registered_custom_ops() -> dict[str, CustomOpDef]:
    """Every registered custom op by name."""
    return dict(_REGISTRY)


def lookup_custom_op(symbol: str) -> CustomOpDef:
    """The registered op named `symbol`, or a ValueError listing the registered names."""
    if (spec := _REGISTRY.get(symbol)) is None:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise ValueError(f"fg.custom: unknown symbol {symbol!r}; registered custom ops: {known}")
    return spec


def _define_library_op(spec: CustomOpDef) -> None:
    """Define the torch.library op once per name; its impls look the spec up at call time,
    so re-registering a name (a reloaded test module) takes effect without redefining."""
    name = spec.name
    if name not in _LIBRARY_OPS:
        lib_op = torch.library.custom_op(
            spec.library_name,
            _make_dispatch(name, device=None),
            mutates_args=(),
            schema="(Tensor[] operands, str parameters) -> Tensor[]",
        )
        assert isinstance(lib_op, LibraryOp)  # given the function, custom_op returns the op
        lib_op.register_fake(_make_dispatch(name, device=None))
        _LIBRARY_OPS[name] = lib_op
        _KERNEL_DEVICES[name] = set()
    for device in set(spec.kernels) - _KERNEL_DEVICES[name]:
        _LIBRARY_OPS[name].register_kernel(device, _make_dispatch(name, device=device))
        _KERNEL_DEVICES[name].add(device)


def _make_dispatch(name: str, device: str | None) -> Callable[[list[torch.Tensor], str], list[torch.Tensor]]:
    def dispatch(operands: list[torch.Tensor], parameters: str) -> list[torch.Tensor]:
        spec = _REGISTRY[name]
        fn = spec.kernels.get(device, spec.torch_impl) if device is not None else spec.torch_impl
        outputs = _as_tuple(fn(*operands, **decode_parameters(parameters)))
        # A torch.library op may not return its inputs or views of them.
        return [o.clone() if _aliases(o, operands) else o for o in outputs]

    dispatch.__name__ = f"{name.replace('.', '_')}_{device or 'default'}"
    return dispatch


def _aliases(out: torch.Tensor, inputs: Sequence[torch.Tensor]) -> bool:
    storage = out.untyped_storage()._cdata
    return any(isinstance(x, torch.Tensor) and x.untyped_storage()._cdata == storage for x in inputs)


def _as_tuple(result: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return (result,) if isinstance(result, torch.Tensor) else tuple(result)


# --- parameters -----------------------------------------------------------------------
def encode_parameters(parameters: Mapping[str, ParamValue]) -> DictionaryAttr:
    """Parameters as a DictionaryAttr (sorted by name), or a ValueError naming a bad one."""
    return DictionaryAttr({key: _param_attr(key, parameters[key]) for key in sorted(parameters)})


def _param_attr(key: str, value: object) -> Attribute:
    if isinstance(value, bool):
        return IntegerAttr(int(value), i1)
    if isinstance(value, int):
        return IntegerAttr(value, i64)
    if isinstance(value, float):
        return FloatAttr(value, Float64Type())
    if isinstance(value, str):
        return StringAttr(value)
    if isinstance(value, DType):
        return DTypeAttr(value)
    raise ValueError(
        f"fg.custom: parameter {key!r} = {value!r} has type {type(value).__name__}; "
        "allowed: bool, int, float, str, DType"
    )


def decode_attr_parameters(attr: DictionaryAttr) -> dict[str, ParamValue]:
    """The Python values of a parameters DictionaryAttr."""
    out: dict[str, ParamValue] = {}
    for key, value in attr.data.items():
        if isinstance(value, IntegerAttr):
            is_bool = isinstance(value.type, IntegerType) and value.type.width.data == 1
            out[key] = bool(value.value.data) if is_bool else value.value.data
        elif isinstance(value, FloatAttr):
            out[key] = value.value.data
        elif isinstance(value, (StringAttr, DTypeAttr)):
            out[key] = value.data
        else:
            raise ValueError(f"fg.custom: parameter {key!r} has unsupported attribute {value}")
    return out


def _json_parameters(parameters: Mapping[str, ParamValue]) -> str:
    return json.dumps(
        {k: {"dtype": v.value} if isinstance(v, DType) else v for k, v in sorted(parameters.items())}
    )


def decode_parameters(text: str) -> dict[str, ParamValue]:
    """The parameters of the torch.library op's JSON string (DTypes restored)."""
    raw = json.loads(text)
    return {k: DType.from_spelling(v["dtype"]) if isinstance(v, dict) else v for k, v in raw.items()}


# --- the op ---------------------------------------------------------------------------
@register_op
@irdl_op_definition
class CustomOp(FgOp):
    """`%y = fg.custom %x, %w {symbol = "mylib.scaled_add", parameters = {alpha = 2 : i64}} : ...`"""

    name = "fg.custom"
    inputs = var_operand_def(TensorType)
    symbol = prop_def(StringAttr)
    parameters = prop_def(DictionaryAttr)
    outputs = var_result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$inputs attr-dict `:` `(` type($inputs) `)` `->` `(` type($outputs) `)`"

    @property
    def parameter_values(self) -> dict[str, ParamValue]:
        """The parameters as Python values."""
        return decode_attr_parameters(self.parameters)

    def __init__(
        self, inputs: Sequence[Operand], *, symbol: str, parameters: Mapping[str, ParamValue] | None = None
    ) -> None:
        params = dict(parameters or {})
        props: dict[str, Attribute] = {"symbol": StringAttr(symbol), "parameters": encode_parameters(params)}
        super().__init__([inputs], props, rule=partial(self.rule, symbol=symbol, params=params))

    def infer_types(self) -> Sequence[Sequence[Attribute]]:
        types = [v.type for v in self.inputs]
        return self.rule(types, symbol=self.symbol.data, params=self.parameter_values)

    @staticmethod
    def rule(types: list[Attribute], *, symbol: str, params: dict[str, ParamValue]) -> list[list[Attribute]]:
        """The shape rule: the registered op's `shape_rule`, checked to give TensorTypes."""
        spec = lookup_custom_op(symbol)
        tensors = [expect_tensor(f"fg.custom {symbol!r}", f"input {i}", t) for i, t in enumerate(types)]
        results: list[Attribute] = list(spec.shape_rule(tensors, params))
        if not results:
            raise ValueError(f"fg.custom {spec.name!r}: shape rule returned no result types")
        for i, t in enumerate(results):
            if not isinstance(t, TensorType):
                raise ValueError(
                    f"fg.custom {spec.name!r}: shape rule result {i} must be a TensorType, got {t!r}"
                )
        return [results]


def custom(
    symbol: str, operands: Sequence[TensorValue], parameters: Mapping[str, ParamValue] | None = None
) -> list[TensorValue]:
    """Build a registered custom op; returns one TensorValue per result type.

    Example:
        >>> (z,) = ops.custom("mylib.scaled_add", [x, y], {"alpha": 2})
    """
    op = emit(CustomOp(list(operands), symbol=symbol, parameters=parameters))
    return [TensorValue(r) for r in op.results]


@torch_impl(CustomOp)
def _custom_torch(op: CustomOp, *tensors: torch.Tensor, ctx: LoweringContext) -> tuple[torch.Tensor, ...]:
    spec = lookup_custom_op(op.symbol.data)
    params = op.parameter_values
    if ctx.mode == "custom":
        outputs = tuple(spec.library_op(list(tensors), _json_parameters(params)))
    else:
        outputs = _as_tuple(spec.torch_impl(*tensors, **params))
    if len(outputs) != len(op.outputs):
        raise ValueError(
            f"fg.custom {spec.name!r}: torch impl returned {len(outputs)} tensors, IR has {len(op.outputs)}"
        )
    return outputs if len(outputs) > 1 else outputs[0]
