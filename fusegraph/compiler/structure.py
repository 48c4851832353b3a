"""Structural rules of a graph module that xDSL's verifier does not check.

xDSL's parser accepts graph regions: a value may be used before the op that defines it,
and an op may use its own result. A fusegraph graph is a straight-line program, so both
are errors here, as is a module without exactly one `func.func`, or a function input that
is not an fg type or has an algebraic dim (`2*n`: a caller cannot pass it).

`structure_problems(module)` lists what is wrong, each with the op it is about, so that the
parser can point at the line (`parse.py`) and passes can refuse a broken module
(`canonicalize` would otherwise loop forever on `%1 = fg.permute %1`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, SSAValue

from fusegraph.compiler.types import BufferType, TensorType


@dataclass(frozen=True)
class Problem:
    """One broken rule: `message`, about `op` (None: about the module as a whole)."""

    op: Operation | None
    message: str


def structure_problems(module: ModuleOp) -> list[Problem]:
    """Every structural rule `module` breaks, in program order (empty when it is well-formed).

    Example:
        >>> [p.message for p in structure_problems(ModuleOp([]))]
        ['a graph module must hold exactly one func.func, found none']
    """
    problems = list(_module_problems(module))
    if problems:
        return problems
    return list(_ssa_order_problems(module.body.block, set()))


def first_problem(module: ModuleOp) -> Problem | None:
    """The first structural problem, or None."""
    problems = structure_problems(module)
    return problems[0] if problems else None


def _module_problems(module: ModuleOp) -> Iterator[Problem]:
    funcs = [op for op in module.ops if isinstance(op, func.FuncOp)]
    others = [op for op in module.ops if not isinstance(op, func.FuncOp)]
    if others:
        yield Problem(others[0], f"a graph module holds only one func.func, found {others[0].name}")
        return
    if len(funcs) != 1:
        found = "none" if not funcs else f"{len(funcs)} (@{', @'.join(f.sym_name.data for f in funcs)})"
        yield Problem(
            funcs[1] if funcs else None, f"a graph module must hold exactly one func.func, found {found}"
        )
        return
    fn = funcs[0]
    if len(fn.body.blocks) != 1:
        yield Problem(
            fn, f"func @{fn.sym_name.data}: the body must be one block, found {len(fn.body.blocks)}"
        )
        return
    for i, arg in enumerate(fn.body.block.args):
        if not isinstance(arg.type, (TensorType, BufferType)):
            yield Problem(
                fn, f"func @{fn.sym_name.data}: input {i} must be a !fg.tensor or !fg.buffer, got {arg.type}"
            )
        elif bad := [str(d) for d in arg.type.shape if d.is_algebraic]:
            yield Problem(
                fn,
                f"func @{fn.sym_name.data}: input {i} has algebraic dims {bad}; "
                "inputs take static or symbolic dims only",
            )


def _ssa_order_problems(block: Block, visible: set[SSAValue]) -> Iterator[Problem]:
    """Operands must be defined earlier: in this block, or in a block around it."""
    defined = visible | set(block.args)
    for op in block.ops:
        for i, operand in enumerate(op.operands):
            if operand in defined:
                continue
            if operand.owner is op:
                yield Problem(op, f"{op.name} uses its own result as operand {i}")
            else:
                yield Problem(op, f"{op.name}: operand {i} is used before it is defined")
        for region in op.regions:
            for inner in region.blocks:
                yield from _ssa_order_problems(inner, defined)
        defined.update(op.results)
