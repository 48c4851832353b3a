"""The lean call path: the signature is checked once per shape key, `model.bind(...)` steps
run on the caller's tensors (no input copies, no output clones under CUDA graphs), and on
CUDA a call never synchronizes with the host (the CUDA tests skip without a GPU)."""

from __future__ import annotations

import pytest
import torch

import fusegraph
from fusegraph.runtime import PagedKVCacheManager
from fusegraph.runtime import eager as eager_mod
from tests.lowering._graphs import SMALL, gptq_attention_graph, gptq_attention_weights

_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class _Params:  # what PagedKVCacheManager reads (duck-typed KVCacheParams)
    dtype, n_kv_heads, head_dim = fusegraph.DType.float32, SMALL.n_kv_heads, SMALL.head_dim
    num_layers, page_size, devices = 2, SMALL.page_size, [fusegraph.DeviceRef.CPU()]


def _decode(
    device: str, steps: int, use_bind: bool, cuda_graphs: bool = False, pipeline: str | None = "default"
):
    """A prefill of [3, 2] tokens, then `steps` decode steps; outputs per step and the cache."""
    graph = gptq_attention_graph(num_layers=2, fused=False)
    weights = gptq_attention_weights(graph)
    model = fusegraph.compile(
        graph, device=device, weights=weights, cuda_graphs=cuda_graphs, pipeline=pipeline
    )
    manager = PagedKVCacheManager(_Params(), num_blocks=SMALL.num_blocks)
    seqs = [manager.claim(max_len=12) for _ in range(2)]
    kv = manager.kv_blocks.to(device)
    gen = torch.Generator().manual_seed(0)
    batch = manager.prepare(seqs, [3, 2], lookup_width=3)
    model(torch.randn(5, SMALL.hidden, generator=gen).to(device), batch.row_offsets.to(device), kv,
          *(t.to(device) for t in batch.kv_inputs[1:]))  # fmt: skip
    manager.commit(seqs, [3, 2])
    batch = manager.prepare(seqs, [1, 1], lookup_width=3)
    static = [torch.zeros(2, SMALL.hidden, device=device), batch.row_offsets.to(device), kv,
              *(t.to(device) for t in batch.kv_inputs[1:])]  # fmt: skip
    step = model.bind(*static) if use_bind else None
    outs = []
    for _ in range(steps):
        batch = manager.prepare(seqs, [1, 1], lookup_width=3)
        fresh = [torch.randn(2, SMALL.hidden, generator=gen), *(t for t in batch.kv_inputs[1:])]
        for dst, src in zip((static[0], static[3], static[4]), fresh):
            dst.copy_(src)  # in place: the bound tensors
        (y,) = step() if step is not None else model(*static)
        outs.append((y.cpu().clone(), y.data_ptr()))
        manager.commit(seqs, [1, 1])
    return model, outs, kv.cpu()


def test_signature__is_checked_once_per_shape_key_and_a_new_key_is_checked(monkeypatch) -> None:
    calls = []
    real = eager_mod.check_inputs

    def counted(*a):
        calls.append(1)
        return real(*a)

    monkeypatch.setattr(eager_mod, "check_inputs", counted)
    _decode("cpu", steps=3, use_bind=False)
    assert len(calls) == 2  # the prefill's key, then the decode key (three calls)


def test_bind__steps_on_the_callers_tensors_equal_plain_calls_on_cpu() -> None:
    _, plain, kv_plain = _decode("cpu", steps=3, use_bind=False)
    _, bound, kv_bound = _decode("cpu", steps=3, use_bind=True)
    for (a, _), (b, _) in zip(plain, bound, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(kv_plain, kv_bound, rtol=0, atol=0)


@_CUDA
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_bind__cuda_steps_equal_cpu_and_reuse_static_outputs_under_graphs(cuda_graphs: bool) -> None:
    _, want, kv_want = _decode("cpu", steps=3, use_bind=False, pipeline=None)
    _, got, kv_got = _decode("cuda", steps=3, use_bind=True, cuda_graphs=cuda_graphs)
    for (a, _), (b, _) in zip(want, got, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(kv_got, kv_want, rtol=1e-3, atol=1e-3)
    if cuda_graphs:
        assert len({ptr for _, ptr in got}) == 1  # the graph's static output, no clones


@_CUDA
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_cuda_call__does_not_synchronize_with_the_host(cuda_graphs: bool) -> None:
    model, _, _ = _decode("cuda", steps=2, use_bind=False, cuda_graphs=cuda_graphs)  # warm, captured
    manager = PagedKVCacheManager(_Params(), num_blocks=SMALL.num_blocks)
    seqs = [manager.claim(max_len=12) for _ in range(2)]
    batch = manager.prepare(seqs, [1, 1], lookup_width=3)
    inputs = [torch.randn(2, SMALL.hidden, device="cuda"), batch.row_offsets.cuda(), manager.kv_blocks.cuda(),
              *(t.cuda() for t in batch.kv_inputs[1:])]  # fmt: skip
    model(*inputs)  # a new cache tensor: its flag is created here
    step = model.bind(*inputs)
    step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            model(*inputs)
            step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    model.synchronize()
