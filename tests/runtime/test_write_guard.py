"""The eager runtime refuses a cache overflow once per call, before anything is written,
whatever runs the writes (torch code, Triton kernels, a replayed CUDA graph)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import fusegraph
from fusegraph import ops
from fusegraph.compiler.dims import Dim
from fusegraph.runtime import PagedKVCacheManager
from fusegraph.runtime.write_guard import WriteGuard, write_guards
from tests.lowering._graphs import SMALL, gptq_attention_graph, gptq_attention_weights, kv_input_types


@pytest.mark.parametrize("fused", [True, False])
def test_write_guards__one_check_for_all_layers_sharing_the_cache_inputs(fused: bool) -> None:
    guards = write_guards(gptq_attention_graph(num_layers=2, fused=fused))
    op = "fg.rope_split_store" if fused else "fg.kv_cache.store"
    rope = "fg.rope_split_store" if fused else "fg.rope"  # the first op: it names bad row offsets
    # inputs: x, row_offsets, kv_blocks, cache_lengths, lookup_table; the rope table is a weight
    want = WriteGuard(op, Dim("total_seq_len"), 2, 1, 3, 4, rope, SMALL.max_pos, None, 1, rope)
    assert guards == [want]


def _rope_graph(caches: int) -> fusegraph.Graph:
    """fg.rope with the table as input 4, then its rows written into `caches` caches (inputs 5..)."""
    cpu = fusegraph.DeviceRef.CPU()
    f32, u32 = fusegraph.DType.float32, fusegraph.DType.uint32
    kv = [SMALL.num_blocks, 2, 1, SMALL.page_size, SMALL.n_kv_heads, SMALL.head_dim]
    types: list[fusegraph.TensorType | fusegraph.BufferType] = [
        fusegraph.TensorType(f32, ["t", SMALL.n_kv_heads, SMALL.head_dim], cpu),
        fusegraph.TensorType(u32, ["b1"], cpu),
        fusegraph.TensorType(u32, ["b"], cpu),
        fusegraph.TensorType(u32, ["b", "p"], cpu),
        fusegraph.TensorType(f32, ["max_pos", SMALL.head_dim], cpu),
        *[fusegraph.BufferType(f32, kv, cpu) for _ in range(caches)],
    ]
    with fusegraph.Graph(f"rope_{caches}", input_types=types) as g:
        x, ro, lengths, lookup, freqs, *kvs = g.inputs
        y = ops.rope(x, ro, lengths, freqs, interleaved=False)
        for kv_in in kvs:
            ops.kv_cache_store(kv_in, y, ro, lengths, lookup, layer_idx=0, key_or_value=0)
        g.output(y)
    return g


def test_write_guards__a_rope_check_reaches_every_written_cache_or_an_own_flag() -> None:
    t = Dim("t")
    rope = WriteGuard("fg.rope", t, None, 1, 2, None, "fg.rope", None, 4, 1, "fg.rope")
    assert write_guards(_rope_graph(0)) == [rope]  # no cache: the guards' own flag
    store = WriteGuard("fg.kv_cache.store", t, 5, 1, 2, 3, "fg.rope", None, 4, 1, "fg.rope")
    assert write_guards(_rope_graph(1)) == [store]  # one cache: one launch checks both
    two = write_guards(_rope_graph(2))
    assert two[:2] == [WriteGuard("fg.kv_cache.store", t, i, 1, 2, 3) for i in (5, 6)]
    assert two[2:] == [replace(rope, kv_blocks=i) for i in (5, 6)]  # a refused rope stops both


_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
_RUNS = [
    ("cpu", False),
    pytest.param("cuda", False, marks=_CUDA),  # the Triton kernels write the cache
    pytest.param("cuda", True, marks=_CUDA),  # a replayed CUDA graph writes the cache
]
_MESSAGE = (
    r"sequence 0 would reach position 8, past its capacity of 8 tokens \(2 pages of 4 in lookup_table row 0\)"
)


class _Params:  # what PagedKVCacheManager reads (duck-typed KVCacheParams)
    dtype, n_kv_heads, head_dim = fusegraph.DType.float32, SMALL.n_kv_heads, SMALL.head_dim
    num_layers, page_size, devices = 2, SMALL.page_size, [fusegraph.DeviceRef.CPU()]


@pytest.mark.parametrize(("device", "cuda_graphs"), _RUNS)
@pytest.mark.parametrize("fused", [True, False])
def test_compiled_graph__refuses_an_overflow_and_writes_nothing(
    fused: bool, device: str, cuda_graphs: bool
) -> None:
    graph = gptq_attention_graph(num_layers=2, fused=fused)
    model = fusegraph.compile(
        graph, device=device, weights=gptq_attention_weights(graph), cuda_graphs=cuda_graphs, pipeline=None
    )
    manager = PagedKVCacheManager(_Params(), num_blocks=SMALL.num_blocks)
    seq = manager.claim(max_len=2 * SMALL.page_size)

    def on(t: torch.Tensor) -> torch.Tensor:
        return t.to(device)

    kv_blocks = on(manager.kv_blocks)

    def step(tokens: int, lengths: torch.Tensor | None = None) -> None:
        batch = manager.prepare([seq], [tokens])
        _, ok_lengths, lookup = batch.kv_inputs
        lengths = ok_lengths if lengths is None else lengths
        model(
            on(torch.randn(tokens, SMALL.hidden)), on(batch.row_offsets), kv_blocks, on(lengths), on(lookup)
        )

    for tokens in (3, 1, 1):  # the same shapes as the refused call below, so a CUDA graph is captured
        step(tokens)
        manager.commit([seq], [tokens])
    before = kv_blocks.clone()
    # Bypass prepare()'s own refusal: claim the cache holds more than its pages allow.
    overflow = torch.tensor([2 * SMALL.page_size], dtype=torch.uint32)
    op = "fg.rope_split_store" if fused else "fg.kv_cache.store"
    if device == "cpu":  # the host check raises before anything runs
        with pytest.raises(ValueError, match=rf"^{op}: {_MESSAGE}$"):
            step(1, overflow)
        assert torch.equal(kv_blocks, before)
        return
    step(1, overflow)  # refused on the device: no host sync, no error yet
    torch.cuda.synchronize()
    assert torch.equal(kv_blocks, before)
    with pytest.raises(ValueError, match=rf"^{op}: {_MESSAGE}; refused on the device: that step"):
        step(1)  # the next call reports it before running
    assert torch.equal(kv_blocks, before)
    step(1)  # reported and cleared: a valid step runs and writes again
    torch.cuda.synchronize()
    assert not torch.equal(kv_blocks, before)
    step(1, overflow)
    with pytest.raises(ValueError, match=rf"^{op}: {_MESSAGE}"):
        model.synchronize()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=_CUDA)])
@pytest.mark.parametrize("caches", [0, 1, 2])
def test_compiled_graph__refuses_a_rope_position_past_the_table_once_and_writes_no_cache(
    caches: int, device: str
) -> None:
    from tests.lowering._graphs import freqs_cis

    model = fusegraph.compile(_rope_graph(caches), device=device, pipeline=None)
    kv_shape = [SMALL.num_blocks, 2, 1, SMALL.page_size, SMALL.n_kv_heads, SMALL.head_dim]
    kvs = [torch.randn(kv_shape, device=device) for _ in range(caches)]
    x = torch.randn(2, SMALL.n_kv_heads, SMALL.head_dim, device=device)

    def call(cached: int) -> None:
        meta = [torch.tensor(v).to(torch.uint32).to(device) for v in ([0, 2], [cached], [[0, 1]])]
        model(x, *meta, freqs_cis(4, SMALL.head_dim).to(device), *kvs)  # a table of 4 positions

    before = [kv.clone() for kv in kvs]
    message = r"^fg.rope: sequence 0 reaches position 4, past the rope table's 4 positions \(freqs_cis rows"
    with pytest.raises(ValueError, match=message):
        call(3)  # positions 3, 4
        model.synchronize()  # CUDA: refused on the device, raised here
    assert all(torch.equal(a, b) for a, b in zip(kvs, before))
    call(2)  # positions 2, 3: runs, and the refusal above is not raised a second time
    model.synchronize()
    assert all(not torch.equal(a, b) for a, b in zip(kvs, before))


def test_cuda_eager_refuses_a_graph_whose_metadata_it_cannot_check_before_the_step() -> None:
    # The device check runs first in the step, on graph inputs (as IREE's host check does); the
    # eager CPU ops check their own operands, so the CPU accepts the graph. Refused before any
    # CUDA work: this runs without a GPU too.
    inputs = [
        fusegraph.TensorType(
            fusegraph.DType.float32, ["t", SMALL.n_kv_heads, SMALL.head_dim], fusegraph.DeviceRef.CPU()
        ),
        fusegraph.TensorType(fusegraph.DType.uint32, ["b1"], fusegraph.DeviceRef.CPU()),
        *kv_input_types(1),
    ]
    with fusegraph.Graph("computed_lengths", input_types=inputs) as g:
        x, ro, kv, lengths, lookup = g.inputs
        ops.kv_cache_store(kv, x, ro, ops.add(lengths, lengths), lookup, layer_idx=0, key_or_value=0)
        g.output(x)
    fusegraph.compile(g, device="cpu", pipeline=None)
    with pytest.raises(ValueError, match=r"^fg.kv_cache.store: cache_lengths is computed inside the graph"):
        fusegraph.compile(g, device="cuda", pipeline=None)
