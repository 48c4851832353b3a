"""fg.slice and fg.gather: shape rules (every error) and numerics vs plain torch indexing."""

from __future__ import annotations

import pytest
import torch

import fusegraph
from fusegraph import DeviceRef, DType, Graph, TensorType, ops
from fusegraph.compiler import Dim

CPU = DeviceRef.CPU()
F32 = DType.float32


def _t(*shape: int | str, dtype: DType = F32) -> TensorType:
    return TensorType(dtype, list(shape), CPU)


INDICES = [
    (slice(1, None), -1),
    (Ellipsis, slice(None, None, 2)),
    (slice(-3, None), slice(2, 7, 3), 0),
    (slice(None, 2), slice(-100, 100)),
    (2,),
    (slice(1, -1), Ellipsis, slice(5, 1)),
]


@pytest.mark.parametrize("index", INDICES, ids=str)
def test_slice__matches_torch_indexing_at_two_symbolic_sizes(index: tuple) -> None:
    with Graph("s", input_types=[_t("n", 8, 6)]) as g:
        (x,) = g.inputs
        g.output(x[index])
    model = fusegraph.compile(g)
    for n in (4, 7):
        data = torch.randn(n, 8, 6)
        (y,) = model(data)
        assert torch.equal(y, data[index])


def test_slice__result_types_use_dim_arithmetic() -> None:
    with Graph("s", input_types=[_t("n", 8)]) as g:
        (x,) = g.inputs
        assert x[1:].shape == (Dim("n") - 1, Dim(8))
        assert x[-2:, ::3].shape == (Dim(2), Dim(3))
        assert x[0].shape == (Dim(8),)
        assert x[:, 9:].shape == (Dim("n"), Dim(0))


@pytest.mark.parametrize(
    ("index", "message"),
    [
        ((slice(None, None, 0),), r"fg.slice: dim 0 step must be > 0, got 0"),
        ((slice(None, None, -1),), r"fg.slice: dim 0 step must be > 0, got -1"),
        ((0, 0, 0), r"fg.slice: too many indices \(3\) for input of rank 2"),
        ((Ellipsis, Ellipsis), r"fg.slice: at most one '...'"),
        ((slice(None), 8), r"fg.slice: index 8 out of range for dim 1 of size 8"),
        ((None,), r"fg.slice: index items must be int, slice or ..., got NoneType"),
        ((slice(None, None, 2),), r"fg.slice: dim 0 \(n\) step 2 needs a static extent, got n"),
        ((slice(0.5, None),), r"fg.slice: dim 0 slice bounds must be ints or None"),
    ],
)
def test_slice__errors_name_dim_and_value(index: tuple, message: str) -> None:
    with Graph("s", input_types=[_t("n", 8)]) as g:
        (x,) = g.inputs
        with pytest.raises(ValueError, match=message):
            ops.slice_tensor(x, index)


@pytest.mark.parametrize("index_dtype", [DType.int32, DType.int64, DType.uint32])
def test_gather__matches_index_select_with_every_index_dtype(index_dtype: DType) -> None:
    with Graph("g", input_types=[_t(10, "d"), _t("b", 3, dtype=index_dtype)]) as g:
        table_in, idx_in = g.inputs
        gathered = ops.gather(table_in, idx_in, axis=0)
        assert gathered.shape == (Dim("b"), Dim(3), Dim("d"))
        g.output(gathered, ops.gather(table_in, idx_in, axis=-1))
    model = fusegraph.compile(g)
    table = torch.randn(10, 10)
    idx = torch.tensor([[9, 0, 3], [1, 1, 2]]).to(index_dtype.to_torch())
    rows, cols = model(table, idx)
    i64 = idx.to(torch.int64)
    assert torch.equal(rows, torch.stack([table[i64[b]] for b in range(2)]))
    assert torch.equal(cols, table[:, i64.reshape(-1)].reshape(10, 2, 3))


@pytest.mark.parametrize(
    ("index_type", "axis", "message"),
    [
        (
            _t(4, dtype=DType.float32),
            0,
            r"fg.gather: indices dtype must be one of int32, int64, uint32, got float32",
        ),
        (_t(4, dtype=DType.int32), 2, r"fg.gather: axis 2 out of range for rank 2 \(allowed -2..1\)"),
        (TensorType(DType.int32, [4], DeviceRef.GPU(0)), 0, r"fg.gather: operands on different devices"),
    ],
)
def test_gather__errors_name_operand_and_allowed_values(
    index_type: TensorType, axis: int, message: str
) -> None:
    with Graph("g", input_types=[_t(10, 4), index_type]) as g:
        table, idx = g.inputs
        with pytest.raises(ValueError, match=message):
            ops.gather(table, idx, axis=axis)
