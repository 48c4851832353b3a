"""The eager runtime folds weight-only subgraphs once, at compile time (`runtime/fold.py`)."""

from __future__ import annotations

import torch

import fusegraph
from fusegraph import DeviceRef, DType, Graph, TensorType

CPU = DeviceRef.CPU()
F32 = DType.float32


def _t(*shape: int | str) -> TensorType:
    return TensorType(F32, list(shape), CPU)


def test_fold__weight_only_ops_run_once_and_the_raw_weight_is_not_kept() -> None:
    with Graph("fold", input_types=[_t("batch", 8)]) as g:
        (x,) = g.inputs
        wv = g.add_weight("w", _t(4, 8))
        bv = g.add_weight("b", _t(4))
        g.output(x @ (wv * 2.0 + 1.0).T + bv)
    w, b = torch.randn(4, 8), torch.randn(4)
    model = fusegraph.compile(g, weights={"w": w, "b": b})
    buffers = dict(model.module.named_buffers())
    folded = [n for n in buffers if n.startswith("_folded_")]
    assert len(folded) == 1 and buffers[folded[0]].shape == (8, 4)  # (w*2+1).T, computed once
    torch.testing.assert_close(buffers[folded[0]], (w * 2 + 1).T)
    assert "_w_b" in "".join(buffers) and not any(t is w for t in buffers.values())  # w only fed the fold
    per_call = [n.meta["fg_op"] for n in model.module.graph.nodes if "fg_op" in n.meta]
    assert per_call == ["fg.matmul", "fg.add"]
    assert [n.op for n in model.module.graph.nodes].count("placeholder") == 1  # only the input
    x = torch.randn(3, 8)
    torch.testing.assert_close(model(x)[0], x @ (w * 2 + 1).T + b)


def test_fold__a_weight_with_a_symbolic_dim_folds_with_the_size_it_binds() -> None:
    with Graph("symbolic", input_types=[_t("n", "k")]) as g:
        (x,) = g.inputs
        wv = g.add_weight("w", _t("k", 3))
        g.output(x @ (wv * 2.0))
    w = torch.randn(5, 3)
    model = fusegraph.compile(g, weights={"w": w})
    assert [n for n, _ in model.module.named_buffers() if n.startswith("_folded_")]
    for n in (1, 4):
        x = torch.randn(n, 5)
        torch.testing.assert_close(model(x)[0], x @ (w * 2))


def test_fold__a_weight_used_as_is_becomes_one_buffer_shared_by_its_readers() -> None:
    with Graph("shared", input_types=[_t("n", 4)]) as g:
        (x,) = g.inputs
        wv = g.add_weight("w", _t(4))
        g.output(x * wv, x + wv)
    w = torch.randn(4)
    model = fusegraph.compile(g, weights={"w": w})
    assert [n for n, _ in model.module.named_buffers() if n.startswith("_w_")] == ["_w_w"]
    x = torch.randn(2, 4)
    y0, y1 = model(x)
    torch.testing.assert_close(y0, x * w)
    torch.testing.assert_close(y1, x + w)
