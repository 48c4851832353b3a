"""`fusegraph.compile(backend="eager")`: numerics vs torch references, weight binding,
input checking, symbolic dims and in-place buffers."""

from __future__ import annotations

import pytest
import torch

import fusegraph
from fusegraph import BufferType, DeviceRef, DType, Graph, TensorType, ops
from tests.compiler._buffer_op import buffer_accumulate

CPU = DeviceRef.CPU()
F32 = DType.float32


def _t(*shape: int | str, dtype: DType = F32) -> TensorType:
    return TensorType(dtype, list(shape), CPU)


def _mlp() -> Graph:
    with Graph("mlp", input_types=[_t("batch", 8)]) as g:
        (x,) = g.inputs
        w = g.add_weight("layers.0.w", _t(4, 8))
        b = g.add_weight("layers.0.b", _t(4))
        g.output(ops.relu(x @ w.T + b))
    return g


def test_eager__mlp_matches_reference_at_two_batch_sizes_without_rebuild() -> None:
    w, b = torch.randn(4, 8), torch.randn(4)
    model = fusegraph.compile(
        _mlp(), backend="eager", device="cpu", weights={"layers.0.w": w, "layers.0.b": b}
    )
    for batch in (1, 5):
        x = torch.randn(batch, 8)
        (y,) = model(x)
        torch.testing.assert_close(y, torch.clamp_min(x @ w.T + b, 0.0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"layers.0.w": torch.zeros(4, 8)}, r"missing \['layers.0.b'\], unknown \[\]"),
        (
            {"layers.0.w": torch.zeros(4, 8), "layers.0.b": torch.zeros(4), "extra": torch.zeros(1)},
            r"missing \[\], unknown \['extra'\]",
        ),
        (
            {"layers.0.w": torch.zeros(8, 4), "layers.0.b": torch.zeros(4)},
            r"weight 'layers.0.w' shape: expected \[4, 8\], got \[8, 4\]",
        ),
        (
            {"layers.0.w": torch.zeros(4, 8, dtype=torch.float16), "layers.0.b": torch.zeros(4)},
            r"weight 'layers.0.w' dtype: expected torch.float32, got torch.float16",
        ),
    ],
)
def test_eager__weight_binding_errors_name_the_weight(weights: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fusegraph.compile(_mlp(), weights=weights)


def _pair() -> fusegraph.runtime.CompiledGraph:
    with Graph("pair", input_types=[_t("n", 4), _t("n", 2, dtype=DType.int32)]) as g:
        x, i = g.inputs
        g.output(x * 2.0, ops.cast(i, F32))
    return fusegraph.compile(g)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ((torch.zeros(3, 4),), r"graph expects 2 inputs, got 1"),
        ((torch.zeros(3, 4), [1, 2]), r"input 1: expected a torch.Tensor, got list"),
        ((torch.zeros(3, 4), torch.zeros(3, 2)), r"input 1: dtype expected torch.int32, got torch.float32"),
        ((torch.zeros(3, 4, 1), torch.zeros(3, 2, dtype=torch.int32)), r"input 0: rank expected 2 \[n, 4\]"),
        ((torch.zeros(3, 5), torch.zeros(3, 2, dtype=torch.int32)), r"input 0: dim 1 expected 4, got 5"),
        (
            (torch.zeros(3, 4), torch.zeros(2, 2, dtype=torch.int32)),
            r"input 1: dim 0 is 'n' = 2, but input 0 dim 0 bound 'n' = 3",
        ),
    ],
)
def test_eager__input_errors_name_input_dim_and_symbol(inputs: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _pair()(*inputs)


def test_eager__returns_graph_outputs_only_and_writes_buffer_in_place() -> None:
    with Graph("buf", input_types=[_t("n", 4), _t(4), BufferType(F32, [2, 4], CPU)]) as g:
        x, row, buf = g.inputs
        buffer_accumulate(buffer_accumulate(buf, row), row * 3.0)
        g.output(x + 1.0)
    model = fusegraph.compile(g)
    cache = torch.ones(2, 4)
    storage = cache.data_ptr()
    x, row = torch.randn(3, 4), torch.randn(4)
    outputs = model(x, row, cache)
    assert len(outputs) == 1
    torch.testing.assert_close(outputs[0], x + 1.0)
    torch.testing.assert_close(cache, (1 + 4 * row).expand(2, 4))
    assert cache.data_ptr() == storage


def test_eager__rejects_unknown_backend_device_and_cuda_graphs_on_cpu() -> None:
    with pytest.raises(ValueError, match=r"unknown backend 'tvm'; allowed: eager, iree"):
        fusegraph.compile(_pair().graph, backend="tvm")
    with pytest.raises(ValueError, match=r"device must be 'cpu' or 'cuda\[:N\]', got 'tpu'"):
        fusegraph.compile(_pair().graph, device="tpu")
    with pytest.raises(ValueError, match=r"cuda_graphs=True needs device='cuda', got device='cpu'"):
        fusegraph.compile(_pair().graph, cuda_graphs=True)
