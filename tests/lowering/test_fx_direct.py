"""`to_aten_fx`: the core-aten GraphModule built op by op from the torch impls. It runs on
real tensors like the eager runtime (outputs and the functional kv_blocks), keeps symbolic
dims dynamic, imports into torch-mlir with one `torch.operator` per custom op, gives the
same MLIR op histogram as tracing the whole graph, traces each op signature once, and falls
back to tracing the whole graph when an op's impl cannot be traced alone."""

from __future__ import annotations

import logging
import operator
import re
from collections import Counter
from typing import Any

import pytest
import torch
from xdsl.ir import Operation

import fusegraph
from fusegraph import DeviceRef, DType, Graph, TensorType, ops
from fusegraph.compiler import impls
from fusegraph.compiler.lowering import fx_direct, to_fx, to_torch_mlir
from fusegraph.compiler.lowering.fx_direct import to_aten_fx
from fusegraph.compiler.lowering.symbolic import trace_op, trace_symbolic
from fusegraph.compiler.lowering.torch_mlir import import_fx
from fusegraph.ops.elementwise import NegOp
from tests.lowering._graphs import SMALL, gptq_attention_graph, gptq_attention_weights

torch_mlir = pytest.importorskip("torch_mlir")

CPU = DeviceRef.CPU()
# Shape bookkeeping that only the traced path spells out (`numel // k` for a -1 view).
_VIEW_SPELLING = {"torch.aten.size.int", "torch.aten.numel", "torch.aten.floordiv.int"}


def _histogram(gm: torch.fx.GraphModule) -> Counter[str]:
    ops_ = re.findall(r"= (torch\.[\w.]+)", str(import_fx(gm)))
    names = [name for name in ops_ if not name.startswith(("torch.constant.", "torch.prim.ListConstruct"))]
    return Counter(n for n in names if n not in _VIEW_SPELLING)


def _step_inputs(tokens: list[int], num_layers: int, seed: int) -> list[torch.Tensor]:
    """x, row_offsets, kv_blocks (random: stores must overwrite the right slots only),
    cache_lengths, lookup_table for one ragged step."""
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.tensor([0, *torch.tensor(tokens).cumsum(0).tolist()], dtype=torch.uint32)
    pages = 4
    lookup = torch.randperm(SMALL.num_blocks, generator=gen)[: len(tokens) * pages]
    kv_shape = (SMALL.num_blocks, 2, num_layers, SMALL.page_size, SMALL.n_kv_heads, SMALL.head_dim)
    return [
        torch.randn(sum(tokens), SMALL.hidden, generator=gen),
        offsets,
        torch.randn(kv_shape, generator=gen),
        torch.tensor([2] * len(tokens), dtype=torch.uint32),
        lookup.reshape(len(tokens), pages).to(torch.uint32),
    ]


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("tokens", [[3, 1], [2, 6, 1]], ids=["T4", "T9"])
def test_direct_module_runs_like_the_eager_runtime(fused: bool, tokens: list[int]) -> None:
    graph = gptq_attention_graph(2, fused)
    weights = gptq_attention_weights(graph)
    gm = to_aten_fx(graph)
    assert gm.meta["fusegraph_lowering"] == "direct"
    inputs = _step_inputs(tokens, 2, seed=len(tokens))
    out, kv_next = gm(*[t.clone() for t in inputs], *weights.values())
    model = fusegraph.compile(graph, backend="eager", device="cpu", weights=weights)
    kv_eager = inputs[2].clone()
    (want,) = model(inputs[0], inputs[1], kv_eager, *inputs[3:])
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(kv_next, kv_eager)  # the functional result == the in-place writes
    assert not torch.equal(kv_next, inputs[2])


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_same_histogram_as_traced_path_one_operator_per_custom_op_and_parses(fused: bool) -> None:
    graph = gptq_attention_graph(2, fused)
    direct = to_torch_mlir(graph, mode="custom")
    assert direct.fx_module.meta["fusegraph_lowering"] == "direct"
    assert set(direct.timings) == {"to_aten_fx", "import"}
    traced = trace_symbolic(to_fx(graph, mode="custom"), graph)
    assert _histogram(direct.fx_module) == _histogram(traced)
    text = str(direct)
    operators = Counter(re.findall(r'torch\.operator "torch\.fusegraph\.(\w+)"', text))
    custom = Counter(op.name for op in graph.block.ops if op.name not in _NOT_CUSTOM)
    assert sum(operators.values()) == sum(custom.values())
    assert operators["qmatmul_gptq"] == 4 and operators["paged_attention"] == 2
    assert direct.argument_types()[0] == "!torch.vtensor<[?,64],f32>"  # total_seq_len
    assert re.search(r"-> \(!torch\.vtensor<\[\?,64\],f32>", text)
    from torch_mlir import ir
    from torch_mlir.dialects import torch as torch_d

    context = ir.Context()
    torch_d.register_dialect(context)
    assert ir.Module.parse(text, context).operation.verify()


_NOT_CUSTOM = {"fg.weight", "fg.split", "fg.reshape", "func.return"}


def _simple_graph() -> Graph:
    """Every non-custom op family, with a reshape that needs size nodes and algebraic dims."""
    inputs = [
        TensorType(DType.float32, ["T", 8], CPU),
        TensorType(DType.int32, ["n"], CPU),
        TensorType(DType.bfloat16, ["a", "b", 4], CPU),
    ]
    with Graph("simple", input_types=inputs) as g:
        x, idx, z = g.inputs
        w = g.add_weight("w", TensorType(DType.float32, [8, 8], CPU))
        nw = g.add_weight("nw", TensorType(DType.float32, [8], CPU))
        c = ops.constant(2.0, DType.float32)
        y = ops.div(ops.mul(ops.sub(ops.add(x, c), x), 3.0), c)
        y = ops.clamp(ops.relu(ops.silu(ops.rsqrt(ops.exp(ops.neg(y))))), -1.0, 1.0)
        y = ops.cast(ops.cast(y, DType.bfloat16), DType.float32)
        y = ops.softmax(ops.rms_norm(ops.matmul(y, w), nw, 1e-5), -1)
        a, b = ops.split(y, [3, 5], axis=1)
        y = ops.reshape(ops.concat([b, a], axis=1), ["T", 2, 4])
        y = ops.reshape(ops.permute(y, [0, 2, 1]), ["T", 8])
        z2 = ops.reshape(ops.reshape(z, ["a", "b", 2, 2]), ["a", "b", 4])
        zn = ops.rms_norm(z2, ops.cast(nw[0:4], DType.bfloat16))
        g.output(y[1:, 2:6], ops.gather(y, idx, axis=0), ops.transpose(y, 0, 1), zn)
    return g


def test_all_plain_op_families__match_the_torch_impls_and_the_traced_histogram() -> None:
    graph = _simple_graph()
    gm = to_aten_fx(graph)
    assert gm.meta["fusegraph_lowering"] == "direct"
    args = [
        torch.randn(7, 8),
        torch.tensor([1, 0, 5], dtype=torch.int32),
        torch.randn(2, 3, 4).to(torch.bfloat16),
        torch.randn(8, 8),
        torch.randn(8),
    ]
    for got, want in zip(gm(*args), to_fx(graph)(*args), strict=True):
        torch.testing.assert_close(got, want)
    assert _histogram(gm) == _histogram(trace_symbolic(to_fx(graph), graph))
    text = str(to_torch_mlir(graph))
    assert "!torch.vtensor<[?,?,4],bf16>" in text and "torch.vtensor<[?,4],f32>" in text


def test_algebraic_dims_become_size_arithmetic() -> None:
    with Graph("flat", input_types=[TensorType(DType.float32, ["a", "b", 4], CPU)]) as g:
        (z,) = g.inputs
        wide = ops.reshape(z, [z.shape[0], z.shape[1] * 4])  # [a, 4*b]: two dynamic dims
        g.output(ops.reshape(wide, ["a", "b", 4]), wide)
    gm = to_aten_fx(g)
    assert gm.meta["fusegraph_lowering"] == "direct"
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.aten.sym_size.int) == 2  # one node per dim name
    assert operator.mul in targets
    z = torch.randn(3, 5, 4)
    back, wide = gm(z)
    assert torch.equal(back, z) and wide.shape == (3, 20)
    assert "-> (!torch.vtensor<[?,?,4],f32>, !torch.vtensor<[?,?],f32>)" in str(to_torch_mlir(g))


def test_each_op_signature_is_traced_once__custom_ops_are_recorded_without_tracing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    traced: list[str] = []

    def counting(op: Operation, *args: Any) -> torch.fx.GraphModule:
        traced.append(op.name)
        return trace_op(op, *args)

    monkeypatch.setattr(fx_direct, "trace_op", counting)
    per_graph = []
    for layers in (1, 3):
        graph = gptq_attention_graph(layers, False)
        assert to_aten_fx(graph).meta["fusegraph_lowering"] == "direct"
        per_graph.append(Counter(traced))
        traced.clear()
    ops_ = Counter(op.name for op in graph.block.ops)
    assert ops_["fg.reshape"] == 18 and ops_["fg.qmatmul.gptq"] == 6
    # Three identical layers trace what one layer traces; the custom ops are never traced.
    assert per_graph[0] == per_graph[1] and set(per_graph[1]) == {"fg.reshape", "fg.split"}


def test_impl_that_cannot_be_traced_alone_falls_back_to_tracing_and_logs_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(op: Operation, *args: Any) -> torch.fx.GraphModule:
        raise RuntimeError(f"cannot trace {op.name}")

    monkeypatch.setattr(fx_direct, "trace_op", refuse)
    graph = gptq_attention_graph(1, True)
    with caplog.at_level(logging.WARNING, logger="fusegraph.compiler.lowering.fx_direct"):
        module = to_torch_mlir(graph, mode="custom")
    assert module.fx_module.meta["fusegraph_lowering"] == "traced"
    assert "fg.reshape: tracing its torch implementation failed: cannot trace fg.reshape" in caplog.text
    assert "torch.fusegraph.rope_split_store" in str(module)


def test_batched_matmul_and_split_into_symbolic_pieces() -> None:
    """torch.matmul's batched case, and `ctx.size` of dims that are no operand's size (the
    pieces `n` and `T - n` are bound to the graph's own size nodes)."""
    inputs = [
        TensorType(DType.float32, ["B", 3, 4], CPU),
        TensorType(DType.float32, ["B", 4, 5], CPU),
        TensorType(DType.float32, ["T", 2], CPU),
        TensorType(DType.float32, ["n"], CPU),
    ]
    with Graph("bmm", input_types=inputs) as g:
        lhs, rhs, x, n = g.inputs
        head, tail = ops.split(x, [n.shape[0], x.shape[0] - n.shape[0]], axis=0)
        g.output(ops.matmul(lhs, rhs), head, tail)
    hints = {"T": 7, "n": 3}  # the trace's example sizes: T - n must be a size
    gm = to_aten_fx(g, dim_hints=hints)
    assert gm.meta["fusegraph_lowering"] == "direct"
    lhs, rhs, x = torch.randn(2, 3, 4), torch.randn(2, 4, 5), torch.randn(7, 2)
    out, head, tail = gm(lhs, rhs, x, torch.zeros(3))
    torch.testing.assert_close(out, lhs @ rhs)
    assert torch.equal(head, x[:3]) and torch.equal(tail, x[3:])
    sizes = [n.args for n in gm.graph.nodes if n.target is torch.ops.aten.sym_size.int]
    assert len(sizes) == len(set(sizes))  # one size node per dim name
    assert "-> (!torch.vtensor<[?,3,5],f32>, !torch.vtensor<[?,2],f32>, !torch.vtensor<[?,2],f32>)" in str(
        to_torch_mlir(g, dim_hints=hints)
    )


def test_an_impl_doing_more_than_one_custom_call_is_traced(monkeypatch: pytest.MonkeyPatch) -> None:
    """A custom call followed by aten math is not recorded as one node: the partly recorded
    node is dropped and the impl is traced (its custom call and the add)."""

    def impl(op: Operation, x: torch.Tensor, *, ctx: Any) -> torch.Tensor:
        summed: torch.Tensor = torch.ops.fusegraph.all_reduce(x, "tp", 1)
        return summed + 1.0

    table: dict[type[Operation], impls.TorchImpl] = {**impls._TORCH_IMPLS, NegOp: impl}  # noqa: SLF001
    monkeypatch.setattr(impls, "_TORCH_IMPLS", table)
    with Graph("g", input_types=[TensorType(DType.float32, ["T", 4], CPU)]) as g:
        g.output(ops.neg(g.inputs[0]))
    gm = to_aten_fx(g)
    assert gm.meta["fusegraph_lowering"] == "direct"
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert targets == [torch.ops.fusegraph.all_reduce.default, torch.ops.aten.add.Tensor]
    x = torch.randn(3, 4)
    torch.testing.assert_close(gm(x)[0], x + 1.0)
