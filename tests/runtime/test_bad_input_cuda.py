"""The bad-input matrix on CUDA eager: every case the CPU refuses is refused on the GPU with the
same message, and the whole KV cache stays byte-identical, with and without CUDA graphs.

On CUDA the metadata values are checked on the device (`runtime/write_guard.py`): the step
that carries them writes nothing and the refusal is raised by `synchronize()` (or the next
call). Shape and stride faults are refused on the host at once. After each refusal a good
call on the same cache runs and writes exactly its rows: no kernel read or wrote out of
bounds (a device assert or a stray write would poison the context or the cache).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import fusegraph
from tests.lowering._graphs import gptq_attention_graph, gptq_attention_weights
from tests.runtime.bad_input_cases import CASES, Call, good_call, sentinel_cache, strided_cache

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
_DEVICE_SUFFIX = "; refused on the device: that step, and any queued after it, wrote nothing to the cache"
_HOST_CASES = {"kv_blocks_not_contiguous", "row_offsets_of_length_batch"}  # shapes, strides


@pytest.fixture(scope="module", params=[(True, False), (False, False), (True, True), (False, True)],
                ids=["fused", "unfused", "fused-graphs", "unfused-graphs"])  # fmt: skip
def models(request: pytest.FixtureRequest) -> SimpleNamespace:
    fused, cuda_graphs = request.param
    graph = gptq_attention_graph(1, fused=fused)
    weights = gptq_attention_weights(graph)
    return SimpleNamespace(
        cpu=fusegraph.compile(graph, device="cpu", weights=weights, pipeline=None),
        cuda=fusegraph.compile(graph, device="cuda", weights=weights, pipeline=None, cuda_graphs=cuda_graphs),
    )


def _cache(call: Call, device: str) -> torch.Tensor:
    if call.kv is not None:
        return strided_cache(device)
    return sentinel_cache().to(device)


def _on_cuda(call: Call, cache: torch.Tensor) -> list[torch.Tensor]:
    return [t if t is cache else t.cuda() for t in call.inputs(cache)]


@pytest.mark.parametrize("case", list(CASES))
def test_cuda_eager_refuses_like_the_cpu_and_writes_nothing(models: SimpleNamespace, case: str) -> None:
    call, _ = CASES[case]
    with pytest.raises(ValueError) as on_cpu:
        models.cpu(*call.inputs(_cache(call, "cpu")))
    cache = _cache(call, "cuda")
    before = cache.clone()
    with pytest.raises(ValueError) as on_gpu:
        models.cuda(*_on_cuda(call, cache))  # host-refused cases raise here
        models.cuda.synchronize()  # the others were refused on the device
    suffix = "" if case in _HOST_CASES else _DEVICE_SUFFIX
    assert str(on_gpu.value) == str(on_cpu.value) + suffix
    torch.cuda.synchronize()
    assert torch.equal(before.view(torch.int32), cache.view(torch.int32)), "the refused step wrote the cache"
    # The flag is cleared and the context is sound: a good call writes exactly its rows.
    good = good_call()
    cache = sentinel_cache().cuda()
    (y,) = models.cuda(*_on_cuda(good, cache))
    models.cuda.synchronize()
    (want,) = models.cpu(*good.inputs(sentinel_cache()))
    torch.testing.assert_close(y.cpu(), want, atol=1e-3, rtol=1e-3)
    changed = (cache.cpu() != sentinel_cache()).flatten(4).any(-1)
    assert {(b, s) for b, _, _, s in changed.nonzero().tolist()} == {(1, 1), (1, 2), (1, 3), (4, 2)}
