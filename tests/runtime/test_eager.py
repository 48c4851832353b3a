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


# --- every op through fusegraph.compile, against torch written from the math -----------
def _positive(n: int, d: int) -> torch.Tensor:
    return torch.rand(n, d) + 0.5


OP_CASES = {
    "add": (lambda x, y: x + y, lambda x, y: x + y),
    "sub": (lambda x, y: x - y, lambda x, y: x - y),
    "mul": (lambda x, y: x * y, lambda x, y: x * y),
    "div": (lambda x, y: x / y, lambda x, y: x / y),
    "scalar_rsub": (lambda x, y: 2.0 - x, lambda x, y: 2.0 - x),
    "neg": (lambda x, y: -x, lambda x, y: -x),
    "exp": (lambda x, y: ops.exp(x), lambda x, y: torch.e**x),
    "rsqrt": (lambda x, y: ops.rsqrt(x), lambda x, y: 1.0 / x.sqrt()),
    "silu": (lambda x, y: ops.silu(x - 1.0), lambda x, y: (x - 1) / (1 + torch.e ** (1 - x))),
    "relu": (lambda x, y: ops.relu(x - 1.0), lambda x, y: torch.where(x > 1, x - 1, 0.0)),
    "cast": (lambda x, y: ops.cast(x, DType.float16), lambda x, y: x.half()),
    "clamp": (
        lambda x, y: ops.clamp(x, min=0.7, max=1.2),
        lambda x, y: torch.minimum(torch.maximum(x, torch.tensor(0.7)), torch.tensor(1.2)),
    ),
    "reshape": (lambda x, y: x.reshape([-1, 2, 3]), lambda x, y: x.view(-1, 2, 3)),
    "permute": (
        lambda x, y: ops.permute(x.reshape(["n", 2, 3]), [2, 0, 1]),
        lambda x, y: x.view(-1, 2, 3).permute(2, 0, 1),
    ),
    "transpose": (lambda x, y: x.T, lambda x, y: x.t()),
    "concat": (lambda x, y: ops.concat([x, y, x], axis=1), lambda x, y: torch.cat([x, y, x], 1)),
    "split": (lambda x, y: ops.split(x, [2, 4], axis=1)[1], lambda x, y: x[:, 2:]),
    "matmul": (lambda x, y: x @ y.T, lambda x, y: torch.einsum("nk,mk->nm", x, y)),
    "batched_matmul": (
        lambda x, y: x.reshape(["n", 2, 3]) @ y.reshape(["n", 3, 2]),
        lambda x, y: torch.einsum("nij,njk->nik", x.view(-1, 2, 3), y.view(-1, 3, 2)),
    ),
    "slice": (lambda x, y: x[1:, ::2], lambda x, y: x[1:, 0::2]),
    "int_index": (lambda x, y: x[:, -1], lambda x, y: x[:, 5]),
    "gather": (
        lambda x, y: ops.gather(x, ops.cast(y * 0.0 + 1.0, DType.int64)[0], axis=1),
        lambda x, y: x[:, [1] * 6],
    ),
    "rms_norm": (
        lambda x, y: ops.rms_norm(x, y[0], 1e-6),
        lambda x, y: x / (x.square().sum(-1, keepdim=True) / 6 + 1e-6).sqrt() * y[0],
    ),
    "softmax": (lambda x, y: ops.softmax(x, axis=0), lambda x, y: torch.e**x / (torch.e**x).sum(0)),
}


@pytest.mark.parametrize("name", sorted(OP_CASES))
def test_eager__op_matches_torch_reference_at_two_sizes(name: str) -> None:
    build, reference = OP_CASES[name]
    with Graph(name, input_types=[_t("n", 6), _t("n", 6)]) as g:
        x, y = g.inputs
        g.output(build(x, y))
    model = fusegraph.compile(g, backend="eager", device="cpu")
    for n in (2, 5):
        x, y = _positive(n, 6), _positive(n, 6)
        (out,) = model(x, y)
        want = reference(x, y)
        assert out.dtype == want.dtype and out.shape == want.shape
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def test_eager__kv_cache_store_writes_callers_blocks_in_place() -> None:
    blocks_type = BufferType(F32, [4, 2, 1, 2, 1, 3], CPU)  # [blocks, k/v, layers, page, heads, dim]
    u32 = DType.uint32
    with Graph(
        "store",
        input_types=[
            _t("t", 1, 3),
            _t("b1", dtype=u32),
            blocks_type,
            _t("b", dtype=u32),
            _t("b", 2, dtype=u32),
        ],
    ) as g:
        x, offsets, kv, lengths, lookup = g.inputs
        kv = ops.kv_cache_store(kv, x, offsets, lengths, lookup, layer_idx=0, key_or_value=1)
        g.output(x * 1.0)
    model = fusegraph.compile(g)
    blocks = torch.zeros(4, 2, 1, 2, 1, 3)
    storage = blocks.data_ptr()
    x = torch.randn(3, 1, 3)
    # Two sequences: 1 new token after 1 cached (pos 1), 2 new tokens after 2 cached (pos 2, 3).
    args = (torch.tensor([0, 1, 3], dtype=torch.uint32), blocks, torch.tensor([1, 2], dtype=torch.uint32))
    (y,) = model(x, *args, torch.tensor([[3, 0], [1, 2]], dtype=torch.uint32))
    torch.testing.assert_close(y, x)
    assert blocks.data_ptr() == storage
    expected = torch.zeros_like(blocks)
    for token, (block, slot) in enumerate([(3, 1), (2, 0), (2, 1)]):  # lookup[b, pos // 2], pos % 2
        expected[block, 1, 0, slot] = x[token]
    torch.testing.assert_close(blocks, expected)


def test_eager__constants_are_computed_once_as_module_buffers() -> None:
    with Graph("c", input_types=[_t("n", 4)]) as g:
        (x,) = g.inputs
        g.output(x * 2.0 + 1.0)
    model = fusegraph.compile(g)
    assert "fg_constant" not in model.module.code
    buffers = dict(model.module.named_buffers())
    assert all(name.startswith("_const_") for name in buffers)
    assert sorted(float(b) for b in buffers.values()) == [1.0, 2.0]
    x = torch.randn(3, 4)
    torch.testing.assert_close(model(x)[0], x * 2 + 1)
