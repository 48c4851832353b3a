"""The IREE CPU backend against the eager CPU backend on a 2-layer GPTQ attention graph:
a ragged prefill then two decode steps on a paged cache filled with sentinels (outputs, the
whole KV cache, and every row the steps do not own untouched), one compile for every
total_seq_len, the on-disk cache, the dtype boundary, and every bad-metadata case refused
before the 2-layer module writes anything."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import fusegraph
from fusegraph import DType
from fusegraph.runtime.iree_backend import (
    IreeCompiledGraph,
    IreeCompileError,
    compile_count,
    compile_iree,
    compile_vmfb,
    from_iree,
    target_flags,
)
from fusegraph.runtime.kv_cache_manager import PagedKVCacheManager
from tests.lowering._graphs import SMALL, gptq_attention_graph, gptq_attention_weights
from tests.runtime.bad_input_cases import CASES, good_call, message_for

pytest.importorskip("iree.compiler")
pytest.importorskip("iree.runtime")

NUM_LAYERS = 2
STEPS = ([5, 7, 1], [1, 1, 1], [1, 1, 1])  # a ragged prefill, then two decode steps


@pytest.fixture(scope="module")
def setup(tmp_path_factory):  # noqa: ANN201
    """The graph, its weights, the cache folder, and the IREE model compiled once."""
    graph = gptq_attention_graph(NUM_LAYERS, fused=True)
    weights = gptq_attention_weights(graph)
    cache_dir = tmp_path_factory.mktemp("iree-cache")
    model = compile_iree(graph, device="cpu", weights=weights, cache_dir=cache_dir)
    return SimpleNamespace(graph=graph, weights=weights, cache_dir=cache_dir, model=model)


def _manager() -> PagedKVCacheManager:
    params = SimpleNamespace(
        dtype=DType.float32, n_kv_heads=SMALL.n_kv_heads, head_dim=SMALL.head_dim,
        num_layers=NUM_LAYERS, page_size=SMALL.page_size,
    )  # fmt: skip
    return PagedKVCacheManager(params, num_blocks=SMALL.num_blocks)


def _sentinel() -> torch.Tensor:
    shape = [SMALL.num_blocks, 2, NUM_LAYERS, SMALL.page_size, SMALL.n_kv_heads, SMALL.head_dim]
    return torch.randn(shape, generator=torch.Generator().manual_seed(99))


def _run_steps(model, seed: int = 0) -> tuple[list[torch.Tensor], PagedKVCacheManager, list[int]]:  # noqa: ANN001
    """Run STEPS through `model` with a fresh cache filled with sentinel values; returns
    outputs, the manager, the seqs."""
    gen = torch.Generator().manual_seed(seed)
    manager = _manager()
    manager.kv_blocks.copy_(_sentinel())
    seqs = [manager.claim(max_len=16) for _ in STEPS[0]]
    outputs = []
    for tokens in STEPS:
        batch = manager.prepare(seqs, tokens)
        x = torch.randn(sum(tokens), SMALL.hidden, generator=gen)
        (y,) = model(x, batch.row_offsets, *batch.kv_inputs)
        outputs.append(y)
        manager.commit(seqs, tokens)
    return outputs, manager, seqs


def test_iree_cpu_matches_eager_cpu_on_prefill_and_decode_outputs_and_cache(setup) -> None:
    eager = fusegraph.compile(setup.graph, backend="eager", device="cpu", weights=setup.weights)
    want, want_cache, _ = _run_steps(eager)
    got, got_cache, seqs = _run_steps(setup.model)
    for step, (g, w) in enumerate(zip(got, want)):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5, msg=f"step {step}: outputs differ")
    torch.testing.assert_close(got_cache.kv_blocks, want_cache.kv_blocks, atol=1e-5, rtol=1e-5)
    # Every (block, slot) no sequence owns still holds its sentinel, in every layer and K/V.
    owned = {
        (got_cache.pages(s)[p // SMALL.page_size], p % SMALL.page_size)
        for s in seqs
        for p in range(got_cache.length(s))
    }
    assert len(owned) == sum(sum(step) for step in STEPS)
    changed = (got_cache.kv_blocks != _sentinel()).flatten(4).any(-1)  # [blocks, 2, layers, slots]
    assert {(b, slot) for b, _, _, slot in changed.nonzero().tolist()} == owned
    k, v = got_cache.gather(seqs[1], layer_idx=1)
    assert k.shape == (9, SMALL.n_kv_heads, SMALL.head_dim) and k.abs().sum() > 0 and v.abs().sum() > 0


def test_one_compile_serves_every_total_seq_len_and_the_disk_cache_hits(setup) -> None:
    before = compile_count()
    _run_steps(setup.model)  # total_seq_len 13, then 3
    assert compile_count() == before
    again = compile_iree(setup.graph, device="cpu", weights=setup.weights, cache_dir=setup.cache_dir)
    assert again.cache_hit and again.vmfb_path == setup.model.vmfb_path
    assert compile_count() == before
    torch.testing.assert_close(_run_steps(again)[0][0], _run_steps(setup.model)[0][0])


def test_fusegraph_compile_dispatches_to_iree(setup) -> None:
    model = fusegraph.compile(
        setup.graph, backend="iree", device="cpu", weights=setup.weights, cache_dir=setup.cache_dir
    )
    assert isinstance(model, IreeCompiledGraph) and model.cache_hit


def test_inputs_and_weights_are_checked(setup) -> None:
    manager = _manager()
    batch = manager.prepare([manager.claim(max_len=4)], [2])
    with pytest.raises(ValueError, match=r"input 1: dtype expected torch.uint32, got torch.int64"):
        setup.model(torch.randn(2, SMALL.hidden), batch.row_offsets.long(), *batch.kv_inputs)
    with pytest.raises(ValueError, match=r"missing \['freqs_cis'\]"):
        weights = {k: v for k, v in setup.weights.items() if k != "freqs_cis"}
        compile_iree(setup.graph, device="cpu", weights=weights, cache_dir=setup.cache_dir)


@pytest.mark.parametrize("case", list(CASES))
def test_the_2_layer_module_refuses_bad_metadata_before_writing_the_cache(setup, case: str) -> None:
    call, pattern = CASES[case]
    cache = _sentinel()
    if call.kv is not None:  # the strided case: the same values, every other float of a wider tensor
        cache = torch.zeros([*cache.shape[:-1], 2 * cache.shape[-1]])[..., ::2].copy_(_sentinel())
    with pytest.raises(ValueError, match=message_for(pattern, fused=True)):
        setup.model(*call.inputs(cache))
    assert torch.equal(cache.view(torch.int32), _sentinel().view(torch.int32)), "the cache was written"
    # The same module then runs a good call and writes exactly its rows, in both layers.
    cache = _sentinel()
    setup.model(*good_call().inputs(cache))
    changed = (cache != _sentinel()).flatten(4).any(-1).nonzero().tolist()  # [blocks, 2, layers, slots]
    assert {(b, s) for b, _, _, s in changed} == {(1, 1), (1, 2), (1, 3), (4, 2)}
    assert len(changed) == 4 * 2 * NUM_LAYERS


def test_compile_error_carries_diagnostics_and_a_reproducer(tmp_path) -> None:
    bad = """func.func @main(%arg0: !torch.vtensor<[?],f32>) -> !torch.vtensor<[?],f32> {
  %0 = torch.operator "torch.fusegraph.nope"(%arg0) : (!torch.vtensor<[?],f32>) -> !torch.vtensor<[?],f32>
  return %0 : !torch.vtensor<[?],f32>
}"""
    with pytest.raises(IreeCompileError, match=r"(?s)error: .*torch.operator") as info:
        compile_vmfb(bad, target_flags("cpu"), cache_dir=tmp_path, name="bad")
    err = info.value
    assert err.input_path.startswith(str(tmp_path)) and open(err.input_path).read() == bad  # noqa: SIM115
    assert err.command.startswith("iree-compile --iree-input-type=torch --iree-hal-target-device=local")
    assert not list(tmp_path.glob("*.vmfb"))


def test_cuda_target_flags_are_the_ones_that_work_in_iree_3_13() -> None:
    assert target_flags("cuda") == ["--iree-hal-target-device=cuda", "--iree-cuda-target=sm_89"]
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda"):
        target_flags("tpu")


class _HostArray:
    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def to_host(self) -> np.ndarray:
        return self.array


def test_unsigned_and_bf16_results_cross_the_boundary_bit_for_bit() -> None:
    signless = np.array([0, 7, -1], dtype=np.int32)  # how IREE returns a ui32 result
    got = from_iree(_HostArray(signless), torch.uint32, "cpu")
    assert got.dtype == torch.uint32 and got.long().tolist() == [0, 7, 2**32 - 1]
    bf16 = torch.tensor([1.5, -2.25], dtype=torch.bfloat16)
    carried = bf16.view(torch.int16).numpy()
    assert torch.equal(from_iree(_HostArray(carried), torch.bfloat16, "cpu"), bf16)
