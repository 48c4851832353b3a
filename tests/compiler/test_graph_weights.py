"""`Graph.weights` is read from the IR: a weight a pass erased is gone, so compiling works."""

from __future__ import annotations

import torch

import fusegraph
from fusegraph import DeviceRef, DType, Graph, TensorType, ops
from fusegraph.passes import PassManager

CPU = DeviceRef.CPU()


def test_weights__forget_a_weight_dce_erased_and_the_graph_compiles() -> None:
    with Graph("g", input_types=[TensorType(DType.float32, [2, 4], CPU)]) as g:
        (x,) = g.inputs
        w = g.add_weight("w", TensorType(DType.float32, [4, 4], CPU))
        g.add_weight("dead", TensorType(DType.float32, [4], CPU))
        g.output(ops.relu(x @ w))
    assert list(g.weights) == ["w", "dead"]
    PassManager("dce").run(g)
    assert list(g.weights) == ["w"] and "1 weights" in repr(g)
    x_val, w_val = torch.randn(2, 4), torch.randn(4, 4)
    (out,) = fusegraph.compile(g, weights={"w": w_val})(x_val)
    torch.testing.assert_close(out, torch.relu(x_val @ w_val))


def test_add_weight__after_dce_erased_it_adds_it_again() -> None:
    with Graph("g", input_types=[TensorType(DType.float32, [2, 4], CPU)]) as g:
        (x,) = g.inputs
        g.add_weight("late", TensorType(DType.float32, [4], CPU))
        (op,) = [o for o in g.block.ops if o.name == "fg.weight"]
        op.detach()  # as a pass erases it
        op.erase()
        assert "late" not in g.weights
        late = g.add_weight("late", TensorType(DType.float32, [4], CPU))
        g.output(x + late)
    assert list(g.weights) == ["late"]
    g.verify()
