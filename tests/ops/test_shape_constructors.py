"""The elementwise, shape, slice, matmul and custom ops construct themselves, as a pass uses
them: from SSA values (here block arguments, outside any graph), with the result types
derived by the class's shape rule, and the rule's errors naming the op, the dims and the
caller's line."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from xdsl.ir import Block, Operation, SSAValue

from fusegraph import DeviceRef, DType, TensorType, ops
from fusegraph.compiler import Dim
from fusegraph.ops.custom import CustomOp, ParamValue
from fusegraph.ops.elementwise import AddOp, CastOp, ClampOp, ConstantOp, ExpOp
from fusegraph.ops.matmul import MatmulOp
from fusegraph.ops.shape import ConcatOp, PermuteOp, ReshapeOp, SplitOp
from fusegraph.ops.slice import END, GatherOp, SliceOp

CPU = DeviceRef.CPU()
F32 = DType.float32
T = Dim("T")


def _t(*shape: int | str | Dim, dtype: DType = F32) -> TensorType:
    return TensorType(dtype, list(shape), CPU)


# a [T, 64] f32, w [64, 32] f32, bias [64] f32, table [256, 16] f32, idx [T] u32
ARGS = [_t("T", 64), _t(64, 32), _t(64), _t(256, 16), _t("T", dtype=DType.uint32)]


def _pair_rule(types: list[TensorType], params: dict[str, ParamValue]) -> list[TensorType]:
    assert isinstance(n := params["n"], int)
    return [types[0], TensorType(F32, [n], CPU)]


ops.register_custom_op(
    "tests.pair", shape_rule=_pair_rule, torch_impl=lambda a, b, *, n: (a, b.flatten()[:n])
)

Build = Callable[[list[SSAValue]], Operation]
CASES: list[tuple[str, Build, list[TensorType]]] = [
    ("matmul", lambda v: MatmulOp(v[0], v[1]), [_t("T", 32)]),
    ("add-broadcast", lambda v: AddOp(v[0], v[2]), [_t("T", 64)]),
    ("exp", lambda v: ExpOp(v[0]), [_t("T", 64)]),
    ("cast", lambda v: CastOp(v[0], dtype=DType.bfloat16), [_t("T", 64, dtype=DType.bfloat16)]),
    ("clamp", lambda v: ClampOp(v[0], min=-1.0), [_t("T", 64)]),
    ("constant", lambda v: ConstantOp(2.0, dtype=DType.float16, device=CPU), [_t(dtype=DType.float16)]),
    ("reshape", lambda v: ReshapeOp(v[0], shape=[-1, 4, 16]), [_t("T", 4, 16)]),
    ("permute", lambda v: PermuteOp(v[0], perm=[1, 0]), [_t(64, "T")]),
    ("concat", lambda v: ConcatOp([v[0], v[0]], axis=1), [_t("T", 128)]),
    ("split", lambda v: SplitOp(v[0], sizes=[48, 16], axis=1), [_t("T", 48), _t("T", 16)]),
    ("slice", lambda v: SliceOp(v[0], bounds=[(1, END, 1), (0, 64, 2)]), [_t(T - 1, 32)]),
    ("gather", lambda v: GatherOp(v[3], v[4], axis=0), [_t("T", 16)]),
    (
        "custom",
        lambda v: CustomOp([v[0], v[1]], symbol="tests.pair", parameters={"n": 5}),
        [_t("T", 64), _t(5)],
    ),
]


@pytest.mark.parametrize(("name", "build", "want"), CASES, ids=[c[0] for c in CASES])
def test_constructor__derives_the_result_types_and_verifies(
    name: str, build: Build, want: list[TensorType]
) -> None:
    op = build(list(Block(arg_types=ARGS).args))
    assert [r.type for r in op.results] == want
    assert op.parent is None  # constructing appends nothing anywhere; `emit` does
    op.verify()  # verify_ runs the same class rule on the built op


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda v: MatmulOp(v[0], v[0]), r"matmul: lhs dim 1 \(64\) != rhs dim 0 \(T\)"),
        (
            lambda v: SplitOp(v[0], sizes=[48, 8], axis=1),
            r"fg.split: sizes \['48', '8'\] sum to 56, but input dim 1 is 64",
        ),
        (
            lambda v: ReshapeOp(v[0], shape=[-1, -1]),
            r"fg.reshape: at most one -1 in the target shape, got \[-1, -1\]",
        ),
        (lambda v: PermuteOp(v[0], perm=[0, 0]), r"fg.permute: perm \[0, 0\] is not a permutation of 0..1"),
        (
            lambda v: GatherOp(v[3], v[0], axis=0),
            r"fg.gather: indices dtype must be one of int32, int64, uint32, got float32",
        ),
    ],
)
def test_constructor_errors__name_the_op_the_dims_and_the_callers_line(build: Build, message: str) -> None:
    with pytest.raises(ValueError, match=message + r" \(at .*test_shape_constructors.py:\d+\)"):
        build(list(Block(arg_types=ARGS).args))
