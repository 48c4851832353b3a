"""`to_fx` builds an FX GraphModule straight from the IR: placeholders, dims, outputs."""

from __future__ import annotations

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from fusegraph import BufferType, DeviceRef, DType, Graph, TensorType, ops
from fusegraph.compiler.lowering import to_fx
from tests.compiler._buffer_op import buffer_accumulate
from tests.compiler.op_examples import EXAMPLES

CPU = DeviceRef.CPU()
F32 = DType.float32


def _buffer_graph() -> Graph:
    with Graph("buf", input_types=[TensorType(F32, ["n", 4], CPU), BufferType(F32, [2, 4], CPU)]) as g:
        x, buf = g.inputs
        w = g.add_weight("layers.0.scale", TensorType(F32, [4], CPU))
        row = ops.reshape(x * w, ["n", 1, 4])
        first = buffer_accumulate(buf, ops.reshape(w, [1, 4]))
        second = buffer_accumulate(first, ops.reshape(w, [1, 4]))
        g.output(ops.relu(row))
        del second
    return g


def test_to_fx__placeholders_are_inputs_then_safe_weight_names() -> None:
    gm = to_fx(_buffer_graph())
    names = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    assert names == ["input_0", "input_1", "layers_0_scale"]
    assert "fg_reshape" in gm.code and "torch.ops.aten.sym_size.int(input_0, 0)" in gm.code


def test_to_fx__functional_mode_returns_final_buffer_version_and_leaves_input_alone() -> None:
    x, buf, w = torch.randn(3, 4), torch.zeros(2, 4), torch.randn(4)
    y, final = to_fx(_buffer_graph(), inplace=False)(x, buf, w)
    torch.testing.assert_close(y, torch.relu(x * w).reshape(3, 1, 4))
    torch.testing.assert_close(final, (2 * w).expand(2, 4))
    assert torch.count_nonzero(buf) == 0


def test_to_fx__inplace_mode_writes_the_callers_buffer() -> None:
    x, buf, w = torch.randn(3, 4), torch.zeros(2, 4), torch.randn(4)
    _, final = to_fx(_buffer_graph(), inplace=True)(x, buf, w)
    assert final is buf
    torch.testing.assert_close(buf, (2 * w).expand(2, 4))


def test_to_fx__symbolic_dims_run_at_two_sizes_and_trace_symbolically() -> None:
    gm = to_fx(EXAMPLES["fg.reshape"]())
    for n in (3, 7):
        x = torch.randn(n, 96)
        heads, swapped = gm(x)
        torch.testing.assert_close(heads, x.reshape(n, 6, 16))
        torch.testing.assert_close(swapped, x.reshape(n, 6, 16).transpose(0, 1))
    traced = make_fx(gm, tracing_mode="symbolic")(torch.randn(5, 96))
    placeholder = next(n for n in traced.graph.nodes if n.op == "placeholder")
    assert isinstance(placeholder.meta["val"].shape[0], torch.SymInt)
    torch.testing.assert_close(traced(torch.ones(9, 96))[0], torch.ones(9, 6, 16))


def test_to_fx__keyword_dim_names_stay_printable() -> None:
    with Graph("kw", input_types=[TensorType(F32, ["lambda", 2], CPU)]) as g:
        (x,) = g.inputs
        g.output(ops.reshape(x, [-1]))
    gm = to_fx(g)
    assert "fg_reshape_1(input_0, lambda_ = lambda_1)" in gm.code
    assert gm(torch.ones(3, 2))[0].shape == (6,)


def test_to_fx__rejects_unknown_mode_and_device() -> None:
    g = EXAMPLES["fg.add"]()
    with pytest.raises(ValueError, match=r"to_fx: mode must be one of custom, decomposed, got 'fused'"):
        to_fx(g, mode="fused")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"to_fx: device must be cpu or cuda"):
        to_fx(g, device="meta")
