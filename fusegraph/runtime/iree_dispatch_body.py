"""Shared pieces of the custom-dispatch builders (`iree_dispatch_ops`, `iree_dispatch_gptq`):
`Body`, the lines of one op's private function (builtin conversions, dims, `flow.dispatch`,
guards); `kernel_ptx`, a Triton kernel compiled once per configuration; `grid`, a count region.

Example:
    >>> body = Body(op)
    >>> (out,) = body.dispatch("fg_x_0_k0", launch, [t], {"T": t}, {"x_ptr": body.operand(0)}, {...})
    >>> emitted = body.finish([out])
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from fusegraph.runtime.iree_dispatch_ir import (
    DispatchOptions,
    DispatchUnsupportedError,
    Emitted,
    Guard,
    Launch,
    Operator,
    TensorArg,
    builtin_type,
    torch_type,
)
from fusegraph.runtime.iree_dispatch_ptx import KernelPTX, triton_ptx

__all__ = [
    "LOG2E",
    "Body",
    "Value",
    "as_float",
    "as_int",
    "cdiv",
    "grid",
    "kernel_ptx",
    "kv_strides",
    "pow2",
    "ptr",
]

_TRITON = {"f16": "fp16", "bf16": "bf16", "f32": "fp32", "si32": "i32", "ui32": "i32"}
LOG2E = 1.4426950408889634
_FG_NAMES = {"paged_attention": "fg.attention.paged", "qmatmul_gptq": "fg.qmatmul.gptq",
             "qmatmul_gptq_pieces": "fg.qmatmul.gptq", "rope_split_store": "fg.rope_split_store"}  # fmt: skip
Value = tuple[str, str, list[str]]  # (SSA name, builtin tensor type, its dynamic dims as index values)


def ptr(t: TensorArg) -> str:
    return "*" + _TRITON[t.dtype]


def pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def as_int(value: object, op: str, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise DispatchUnsupportedError(f"iree_dispatch: {op}: {name} must be an int constant, got {value!r}")
    return value


def as_float(value: object, op: str, name: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise DispatchUnsupportedError(f"iree_dispatch: {op}: {name} must be a number, got {value!r}")
    return float(value)


@lru_cache(maxsize=64)
def _compile(fn: Any, dynamic: tuple[tuple[str, str], ...], constexprs: tuple[tuple[str, Any], ...],
             num_warps: int, num_stages: int, arch: int) -> KernelPTX:  # fmt: skip
    return triton_ptx(fn, dict(dynamic), dict(constexprs), num_warps, num_stages, arch)


def kernel_ptx(fn: Any, dynamic: dict[str, str], constexprs: dict[str, Any], opts: DispatchOptions,
               num_warps: int = 4, num_stages: int = 3) -> KernelPTX:  # fmt: skip
    """`triton_ptx` of `fn`, cached per configuration (a module has several identical ops)."""
    return _compile(fn, tuple(dynamic.items()), tuple(constexprs.items()), num_warps, num_stages, opts.arch)


class Body:
    """The lines of a private function body, with de-duplicated index constants and dims."""

    def __init__(self, op: Operator) -> None:
        self.op = op
        self.lines: list[str] = []
        self.values: dict[str, str] = {}
        self.tensors = op.tensors
        self.launches: list[Launch] = []
        self.guards: list[Guard] = []
        for i, t in enumerate(self.tensors):
            self.lines.append(
                f"%b{i} = torch_c.to_builtin_tensor %a{i} : {torch_type(t.dims, t.dtype)} -> {builtin_type(t.dims, t.dtype)}"
            )

    def _new(self, key: str, line: str) -> str:
        if key not in self.values:
            name = f"%v{len(self.values)}"
            self.values[key] = name
            self.lines.append(f"{name} = {line}")
        return self.values[key]

    def index(self, n: int) -> str:
        return self._new(f"c{n}", f"arith.constant {n} : index")

    def dim(self, i: int, axis: int) -> str:
        """Dim `axis` of tensor operand `i` as an index value."""
        t = self.tensors[i]
        size = t.dims[axis]
        if size is not None:
            return self.index(size)
        return self._new(
            f"d{i}.{axis}", f"tensor.dim %b{i}, {self.index(axis)} : {builtin_type(t.dims, t.dtype)}"
        )

    def arith(self, op: str, a: str, b: str) -> str:
        return self._new(f"{op}({a},{b})", f"arith.{op} {a}, {b} : index")

    def i32(self, value: str) -> str:
        return self._new(f"i32({value})", f"arith.index_cast {value} : index to i32")

    def nonempty(self, operand: int) -> None:
        """CUDA refuses a launch of zero blocks: a call whose `operand` has 0 rows is refused by name."""
        name = _FG_NAMES.get(self.op.op, self.op.op)
        self.guards.append(
            Guard(operand, 0, "ugt", 0, f"iree_dispatch: {name}: a call with 0 rows has no launch")
        )

    def operand(self, i: int) -> Value:
        """Tensor operand `i` as (builtin value, type, its dynamic dims)."""
        t = self.tensors[i]
        return (
            f"%b{i}",
            builtin_type(t.dims, t.dtype),
            [self.dim(i, a) for a, d in enumerate(t.dims) if d is None],
        )

    def dispatch(
        self,
        name: str,
        launch: Launch,
        workload: list[str],
        constants: dict[str, str],
        operands: dict[str, Value],
        results: dict[str, Value | str],
    ) -> list[Value]:
        """A `flow.dispatch` of `launch`. `constants`: the kernel's scalar parameters -> index
        values; `operands`: its read pointers -> values; `results`: its written pointers ->
        a new result (value name ignored) or the name of the operand it is tied to (written in
        place). Bindings are the operands then the new results, in the kernel's order."""
        kernel = launch.kernel
        new = [n for n, r in results.items() if not isinstance(r, str)]
        expected = [n for n in kernel.bindings if n in operands] + [n for n in kernel.bindings if n in new]
        if expected != kernel.bindings or len(expected) != len(operands) + len(new):
            raise DispatchUnsupportedError(
                f"iree_dispatch: {kernel.name}: PTX bindings {kernel.bindings} != operands {list(operands)} + "
                f"results {new}"
            )
        if sorted(constants) != sorted(kernel.constants):
            raise DispatchUnsupportedError(
                f"iree_dispatch: {kernel.name}: PTX constants {kernel.constants} != {list(constants)}"
            )
        args = [self.i32(constants[n]) for n in kernel.constants]
        types = ["i32"] * len(args)
        for n in [b for b in kernel.bindings if b in operands]:
            value, typ, dyn = operands[n]
            args.append(value)
            types.append(typ + _dims(dyn))
        outs, values = [], []
        single = len(results) == 1
        for k, r in enumerate(results.values()):
            ssa = f"%{name}" if single else f"%{name}#{k}"
            if isinstance(r, str):
                value, typ, dyn = operands[r]
                outs.append(value + _dims(dyn))
            else:
                _, typ, dyn = r
                outs.append(typ + _dims(dyn))
            values.append((ssa, typ, dyn))
        res = f"%{name}" if single else f"%{name}:{len(results)}"
        self.lines.append(
            f"{res} = flow.dispatch @{name}::@{kernel.name}[{', '.join(workload)}]({', '.join(args)}) : "
            f"({', '.join(types)}) -> ({', '.join(outs)})"
        )
        self.launches.append(launch)
        return values

    def finish(self, values: list[Value]) -> Emitted:
        """Convert `values` (in `op.results` order) back to torch and return them."""
        outs = []
        for k, ((value, _t, _d), (dims, dtype)) in enumerate(zip(values, self.op.results, strict=True)):
            self.lines.append(
                f"%o{k} = torch_c.from_builtin_tensor {value} : {builtin_type(dims, dtype)} -> {torch_type(dims, dtype)}"
            )
            outs.append(f"%o{k}")
        types = ", ".join(torch_type(d, t) for d, t in self.op.results)
        self.lines.append(f"return {', '.join(outs)} : {types}")
        return Emitted(self.lines, self.launches, self.guards)


def _dims(dyn: list[str]) -> str:
    return f"{{{', '.join(dyn)}}}" if dyn else ""


def grid(x: str, y: int | str = 1, z: int | str = 1, setup: tuple[str, ...] = ()) -> list[str]:
    """Count-region lines: `setup`, then constants for the int extents, then `hal.return`."""
    lines = list(setup)
    vals = []
    for i, e in enumerate((x, y, z)):
        if isinstance(e, int):
            lines.append(f"%g{i} = arith.constant {e} : index")
            vals.append(f"%g{i}")
        else:
            vals.append(e)
    return [*lines, f"hal.return {', '.join(vals)} : index, index, index"]


def kv_strides(kv: TensorArg, op: str) -> dict[str, int]:
    if len(kv.dims) != 6 or any(d is None for d in kv.dims):
        raise DispatchUnsupportedError(
            f"iree_dispatch: {op}: kv_blocks must be 6-D and static, got {kv.dims}"
        )
    dims = [int(d) for d in kv.dims if d is not None]
    strides = [math.prod(dims[i + 1 :]) for i in range(6)]
    return {f"s_kv{i}": s for i, s in enumerate(strides)}
