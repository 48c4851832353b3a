"""The eager runtime on CUDA (skipped without a GPU): CUDA eager and CUDA-graph replay match
CPU eager on outputs and on the KV cache; custom-op CUDA kernels are dispatched."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import pytest
import torch

import fusegraph
from fusegraph import BufferType, DeviceRef, DType, Graph, TensorType, ops

if TYPE_CHECKING:
    from fusegraph.runtime.cuda_graphs import CudaGraphRunner

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CPU, F32, U32 = DeviceRef.CPU(), DType.float32, DType.uint32


def _t(*shape: int | str, dtype: DType = F32) -> TensorType:
    return TensorType(dtype, list(shape), CPU)


def _store_graph() -> Graph:
    kv_type = BufferType(F32, [8, 2, 1, 2, 1, 3], CPU)
    inputs: list[TensorType | BufferType] = [
        _t("t", 1, 3), _t("b1", dtype=U32), kv_type, _t("b", dtype=U32), _t("b", 4, dtype=U32)
    ]  # fmt: skip
    with Graph("store", input_types=inputs) as g:
        x, ro, kv, lens, lookup = g.inputs
        kv = ops.kv_cache_store(kv, x, ro, lens, lookup, layer_idx=0, key_or_value=0)
        kv = ops.kv_cache_store(kv, x * 2.0, ro, lens, lookup, layer_idx=0, key_or_value=1)
        w = g.add_weight("w", _t(3, 3))
        flat = x.reshape(["t", 3])
        g.output(ops.softmax(flat @ w, axis=-1), ops.rms_norm(flat, w[0], 1e-6))
    return g


def _steps() -> list[tuple[torch.Tensor, ...]]:
    """A ragged prefill (3 + 2 tokens), then three decode steps of the same shape."""
    u32 = torch.uint32
    lookup = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]], dtype=u32)
    steps: list[tuple[torch.Tensor, ...]] = [
        (torch.tensor([0, 3, 5], dtype=u32), torch.tensor([0, 0], dtype=u32), lookup)
    ]
    for step in range(3):
        steps.append(
            (torch.tensor([0, 1, 2], dtype=u32), torch.tensor([3 + step, 2 + step], dtype=u32), lookup)
        )
    return steps


def _run(device: str, cuda_graphs: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(3, 3, generator=gen)
    model = fusegraph.compile(_store_graph(), device=device, weights={"w": w}, cuda_graphs=cuda_graphs)
    kv = torch.zeros(8, 2, 1, 2, 1, 3, device=device)
    storage, outputs = kv.data_ptr(), []
    for ro, lens, lookup in _steps():
        x = torch.randn(int(ro[-1]), 1, 3, generator=gen)
        outputs += [
            o.cpu() for o in model(x.to(device), ro.to(device), kv, lens.to(device), lookup.to(device))
        ]
    assert kv.data_ptr() == storage
    return outputs, kv.cpu()


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_eager_cuda__matches_cpu_on_outputs_and_cache(cuda_graphs: bool) -> None:
    want, want_kv = _run("cpu", False)
    got, got_kv = _run("cuda", cuda_graphs)
    for w, o in zip(want, got):
        torch.testing.assert_close(o, w, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_kv, want_kv)


def test_eager_cuda__graphs_capture_once_per_shape_and_replay() -> None:
    with Graph("mlp", input_types=[_t("n", 8)]) as g:
        (x,) = g.inputs
        wv = g.add_weight("w", _t(8, 8))
        g.output(ops.softmax(ops.silu(x @ wv), axis=-1), x[1:] * 2.0)
    w = torch.randn(8, 8)
    cpu = fusegraph.compile(g, weights={"w": w})
    gpu = fusegraph.compile(g, device="cuda", weights={"w": w}, cuda_graphs=True)
    for n in (4, 4, 4, 6, 6, 4):
        x = torch.randn(n, 8)
        for want, got in zip(cpu(x), gpu(x.cuda())):
            torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5)
    assert len(cast("CudaGraphRunner", gpu._cuda_graphs).captured) == 2


def test_eager_cuda__custom_op_dispatches_its_cuda_kernel() -> None:
    calls: list[str] = []

    def cuda_kernel(x: torch.Tensor, *, alpha: int) -> torch.Tensor:
        calls.append(x.device.type)
        return x * alpha + 1

    ops.register_custom_op(
        "cudatest.affine",
        lambda types, p: [types[0]],
        lambda x, *, alpha: x * alpha + 1,
        kernels={"cuda": cuda_kernel},
    )
    with Graph("c", input_types=[_t("n", 4)]) as g:
        (x,) = g.inputs
        g.output(*ops.custom("cudatest.affine", [x], {"alpha": 3}))
    x = torch.randn(5, 4, device="cuda")
    (y,) = fusegraph.compile(g, device="cuda")(x)
    torch.testing.assert_close(y, x * 3 + 1)
    assert calls == ["cuda"]
