"""fg.allreduce / fg.allgather: IR, passes that must leave them alone, lowering, and a
2-process gloo run against the math."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from fusegraph import DeviceRef, DType, Graph, TensorType, ops
from fusegraph.compiler.lowering import to_fx
from fusegraph.distributed import CollectiveError, launch
from fusegraph.ops.collective import CollectiveLoweringError
from fusegraph.passes import PassManager
from fusegraph.runtime import compile as fg_compile
from tests.distributed import _workers

CPU = DeviceRef.CPU()


def _graph(world_size: int = 2) -> Graph:
    """Two identical allreduces of one input, an unused allgather, and a reduce of a constant."""
    with Graph("c", input_types=[TensorType(DType.float32, ["t", 8], CPU)]) as g:
        (x,) = g.inputs
        a = ops.allreduce(x, world_size=world_size)
        b = ops.allreduce(x, world_size=world_size)
        ops.allgather(x, axis=0, world_size=world_size)  # unused: still an exchange
        c = ops.allreduce(ops.constant(1.0, DType.float32), world_size=world_size)
        g.output(a + b, c)
    return g


def _count(g: Graph, name: str) -> int:
    return sum(1 for op in g.block.ops if op.name == name)


def test_collectives__shape_rules_and_errors() -> None:
    with Graph("s", input_types=[TensorType(DType.float32, ["t", 8], CPU)]) as g:
        (x,) = g.inputs
        assert ops.allgather(x, axis=-1, world_size=4).type.shape[1] == 32
        assert str(ops.allgather(x, axis=0, world_size=2).type.shape[0]) == "2*t"
        with pytest.raises(ValueError, match="fg.allreduce: world_size must be a positive int, got 0"):
            ops.allreduce(x, world_size=0)
        with pytest.raises(
            ValueError, match=r"fg.allgather: axis 2 out of range for rank 2 \(allowed -2..1\)"
        ):
            ops.allgather(x, axis=2, world_size=2)
        with pytest.raises(ValueError, match="fg.allreduce: group must be a non-empty"):
            ops.allreduce(x, group="", world_size=2)


def test_passes__never_merge_erase_or_fold_a_collective() -> None:
    g = _graph()
    PassManager("canonicalize,cse,dce").run(g)
    assert _count(g, "fg.allreduce") == 3 and _count(g, "fg.allgather") == 1


def test_eager_runtime__keeps_every_collective_and_needs_a_group() -> None:
    compiled = fg_compile(_graph(), device="cpu")
    called = [n.meta.get("fg_op") for n in compiled.module.graph.nodes if n.op == "call_function"]
    assert called.count("fg.allreduce") == 3, "the allreduce of a constant must not be folded"
    with pytest.raises(CollectiveError, match="fg.allreduce: no process group named 'tp' on this rank"):
        compiled(torch.ones(3, 8))


def test_world_size_one__is_the_identity_without_torch_distributed() -> None:
    x = torch.randn(3, 8)
    a, c = fg_compile(_graph(world_size=1), device="cpu")(x)
    torch.testing.assert_close(a, 2 * x, rtol=0, atol=0)
    torch.testing.assert_close(c, torch.tensor(1.0), rtol=0, atol=0)


def test_lowering__decomposed_refuses_and_custom_emits_the_library_op() -> None:
    with pytest.raises(CollectiveLoweringError, match="fg.allreduce: a collective has no decomposed"):
        to_fx(_graph(), mode="decomposed")(torch.ones(3, 8))
    if importlib.util.find_spec("torch_mlir") is None:
        pytest.skip("torch-mlir is not installed")
    from fusegraph.compiler.lowering import to_torch_mlir

    text = str(to_torch_mlir(_graph(), mode="custom"))
    assert text.count('torch.operator "torch.fusegraph.all_reduce"') == 3
    assert text.count('torch.operator "torch.fusegraph.all_gather"') == 1


def test_two_gloo_ranks__allreduce_and_allgather_equal_the_math() -> None:
    results = launch(_workers.collectives, 2, backend="gloo", start_method="fork")
    xs = [_workers._x(r) for r in range(2)]
    for rank, res in enumerate(results):
        reduced, twice, cols, rows = res["outs"]
        torch.testing.assert_close(reduced, xs[0] + xs[1], rtol=0, atol=0)
        torch.testing.assert_close(twice, xs[0] + xs[1], rtol=0, atol=0)
        torch.testing.assert_close(cols, torch.cat(xs, dim=1), rtol=0, atol=0)
        torch.testing.assert_close(rows, torch.cat(xs, dim=0), rtol=0, atol=0)
        assert "graph was built for world_size 4, but process group 'tp' has 2 ranks" in res["error"], rank
