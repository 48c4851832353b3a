"""PagedKVCacheManager: on-demand blocks, step metadata, refusals, gather, and one ragged
prefill + decode run through a compiled graph. Prefix sharing: test_kv_prefix_sharing.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

import fusegraph
from fusegraph import BufferType, DeviceRef, DType, Graph, TensorType, ops
from fusegraph.runtime import PagedKVCacheManager
from fusegraph.runtime.kv_cache_manager import KVCacheFullError
from tests.ops.paged_reference import NO_BLOCK, dense_attention, freqs_table, rope_reference

CPU = DeviceRef.CPU()


def _params(page_size: int = 4, **kw: Any) -> SimpleNamespace:
    fields = dict(
        dtype=DType.float32, n_kv_heads=2, head_dim=8, num_layers=2, page_size=page_size, devices=[CPU]
    )
    return SimpleNamespace(**(fields | kw))


def test_manager__allocates_zeroed_blocks_in_maxs_layout() -> None:
    m = PagedKVCacheManager(_params(), num_blocks=6)
    assert m.kv_blocks.shape == (6, 2, 2, 4, 2, 8) and m.kv_blocks.dtype == torch.float32
    assert not m.kv_blocks.any()


def test_manager__accepts_the_layers_kv_cache_params() -> None:
    from fusegraph.nn.kv_cache import KVCacheParams

    params = KVCacheParams(
        dtype=DType.float32, n_kv_heads=2, head_dim=16, num_layers=1, page_size=16, devices=[CPU]
    )
    m = PagedKVCacheManager(params, num_blocks=64)
    assert m.input_types() == [
        BufferType(DType.float32, [64, 2, 1, 16, 2, 16], CPU),
        TensorType(DType.uint32, ["batch"], CPU),
        TensorType(DType.uint32, ["batch", "max_pages"], CPU),
    ]


def test_manager__refuses_params_without_the_cache_fields() -> None:
    with pytest.raises(ValueError, match=r"params lacks \['page_size'\]"):
        PagedKVCacheManager(SimpleNamespace(dtype=DType.float32, n_kv_heads=1, head_dim=2, num_layers=1), 4)


def test_manager__claim_reserves_nothing_and_prepare_allocates_on_demand() -> None:
    m = PagedKVCacheManager(_params(page_size=4), num_blocks=6)
    a, b = m.claim(max_len=4096), m.claim()
    assert a != b and m.free_blocks == 6
    m.prepare([a, b], [5, 1])
    assert m.pages(a) == [0, 1] and m.pages(b) == [2] and m.free_blocks == 3
    m.commit([a, b], [5, 1])
    m.prepare([a, b], [4, 2])  # a's positions 5..8 fill page 1 and start page 2; b stays in its page
    assert m.pages(a) == [0, 1, 3] and m.pages(b) == [2]
    m.commit([a, b], [4, 2])
    m.release(a)
    assert m.free_blocks == 5
    with pytest.raises(ValueError, match="release: unknown sequence 0"):
        m.release(a)


def test_manager__a_full_cache_raises_a_named_error_and_changes_nothing() -> None:
    m = PagedKVCacheManager(_params(page_size=4), num_blocks=3)
    a, b = m.claim(), m.claim()
    m.prepare([a], [8])
    m.commit([a], [8])
    with pytest.raises(
        KVCacheFullError, match=r"the step needs 2 more blocks but only 1 of 3 are free"
    ) as err:
        m.prepare([a, b], [1, 1])
    assert (err.value.needed, err.value.free) == (2, 1)
    assert m.pages(a) == [0, 1] and m.pages(b) == [] and m.free_blocks == 1
    with pytest.raises(ValueError, match="commit: sequence 0 has no prepared step"):
        m.commit([a], [1])
    assert m.length(a) == 8


def test_manager__claim_refuses_a_non_integer_max_len() -> None:
    m = PagedKVCacheManager(_params(), num_blocks=4)
    for bad in (2.5, 0, -1, True):
        with pytest.raises(ValueError, match=r"claim: max_len must be an int >= 1 \(or None\), got max_len="):
            m.claim(max_len=bad)  # type: ignore[arg-type]
    assert m.sequences == []


def test_manager__commit_refuses_without_prepare_or_with_other_counts() -> None:
    m = PagedKVCacheManager(_params(), num_blocks=8)
    seqs = [m.claim(), m.claim()]
    with pytest.raises(ValueError, match="commit: sequence 0 has no prepared step; call prepare first"):
        m.commit(seqs, [1, 1])
    m.prepare(seqs, [3, 1])
    with pytest.raises(ValueError, match="commit: sequence 1 was prepared with 1 tokens, not 2"):
        m.commit(seqs, [3, 2])
    with pytest.raises(ValueError, match=r"prepare: sequence 0: token count must be an int >= 0, got 2.5"):
        m.prepare(seqs, [2.5, 1])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"commit: sequence 1: token count must be an int >= 0, got 1.0"):
        m.commit(seqs, [3, 1.0])  # type: ignore[list-item]
    assert [m.length(s) for s in seqs] == [0, 0]
    m.commit(seqs, [3, 1])
    assert [m.length(s) for s in seqs] == [3, 1]
    with pytest.raises(ValueError, match="commit: sequence 0 has no prepared step"):
        m.commit(seqs, [3, 1])  # a step commits once


def test_manager__prepare_builds_ragged_metadata() -> None:
    m = PagedKVCacheManager(_params(page_size=4), num_blocks=8)
    seqs = [m.claim(max_len=8), m.claim(max_len=3)]
    m.prepare(seqs, [2, 1])
    m.commit(seqs, [2, 1])
    batch = m.prepare(seqs, [5, 1])
    assert batch.row_offsets.dtype == torch.uint32
    assert batch.row_offsets.tolist() == [0, 5, 6]
    assert batch.cache_lengths.tolist() == [2, 1]
    assert batch.lookup_table.to(torch.int64).tolist() == [[0, 2], [1, NO_BLOCK]]
    assert batch.kv_inputs[0] is m.kv_blocks
    assert batch.kv_inputs[1:] == (batch.cache_lengths, batch.lookup_table)
    # one packed host array, one transfer: each part a contiguous, 16-byte aligned view
    parts = (batch.row_offsets, batch.cache_lengths, batch.lookup_table)
    assert [tuple(t.shape) for t in parts] == [(3,), (2,), (2, 2)]
    assert all(t.is_contiguous() and t.data_ptr() % 16 == 0 for t in parts)


def test_manager__prepare_pads_rows_into_their_own_scratch_pages_and_widens_the_lookup() -> None:
    # Each padding row writes a page of its own: two rows writing one block is what the
    # runtime refuses as a write into another sequence's cache (on CUDA, inside the graph).
    m = PagedKVCacheManager(_params(page_size=4), num_blocks=8)
    s = m.claim()
    batch = m.prepare([s], [1], pad_to=3, lookup_width=4)
    first, second = int(batch.lookup_table[1, 0]), int(batch.lookup_table[2, 0])
    assert first != second and not {first, second} & set(m.pages(s)) and m.free_blocks == 5
    assert batch.row_offsets.tolist() == [0, 1, 2, 3] and batch.cache_lengths.tolist() == [0, 0, 0]
    assert batch.lookup_table.to(torch.int64).tolist() == [
        [0, NO_BLOCK, NO_BLOCK, NO_BLOCK],
        [first, NO_BLOCK, NO_BLOCK, NO_BLOCK],
        [second, NO_BLOCK, NO_BLOCK, NO_BLOCK],
    ]
    m.commit([s], [1])
    again = m.prepare([s], [1], pad_to=3, lookup_width=4)  # the scratch pages are reused
    assert [int(again.lookup_table[i, 0]) for i in (1, 2)] == [first, second] and m.free_blocks == 5


def test_manager__prepare_refuses_a_step_past_max_len() -> None:
    m = PagedKVCacheManager(_params(page_size=4), num_blocks=8)
    seqs = [m.claim(max_len=8), m.claim(max_len=6)]
    m.prepare(seqs, [1, 4])
    m.step(seqs, [1, 4])
    with pytest.raises(
        ValueError, match=r"prepare: sequence 1 holds 4 tokens; 3 more would reach position 6, past"
    ):
        m.prepare(seqs, [1, 3])
    with pytest.raises(ValueError, match="commit: sequence 1 holds 4 tokens"):
        m.commit(seqs, [1, 3])
    assert [m.length(s) for s in seqs] == [1, 4]


def test_manager__prepare_refuses_mismatched_arguments() -> None:
    m = PagedKVCacheManager(_params(), num_blocks=8)
    s = m.claim(max_len=4)
    with pytest.raises(ValueError, match="prepare: 1 sequences but 2 token counts"):
        m.prepare([s], [1, 1])
    with pytest.raises(ValueError, match="prepare: a sequence appears twice"):
        m.prepare([s, s], [1, 1])
    with pytest.raises(ValueError, match="prepare: sequence 0: 2 tokens but 1 token ids"):
        m.prepare([s], [2], token_ids=[[7]])


def test_manager__gather_reads_positions_across_pages() -> None:
    m = PagedKVCacheManager(_params(page_size=2), num_blocks=8)
    first = m.claim(max_len=2)  # so the next sequence's pages do not start at block 0
    m.prepare([first], [2])
    s = m.claim(max_len=5)
    m.prepare([s], [5])
    m.commit([s], [5])
    for p in range(5):
        m.kv_blocks[1 + p // 2, 0, 1, p % 2] = p
        m.kv_blocks[1 + p // 2, 1, 1, p % 2] = -p
    k, v = m.gather(s, layer_idx=1)
    assert k.shape == (5, 2, 8)
    assert k[:, 0, 0].tolist() == [0, 1, 2, 3, 4] and v[:, 1, 7].tolist() == [0, -1, -2, -3, -4]


def test_manager__ragged_prefill_then_decode_through_a_compiled_graph() -> None:
    torch.manual_seed(0)
    params, heads, d = _params(page_size=4, num_layers=1), 4, 8
    m = PagedKVCacheManager(params, num_blocks=32)
    u32 = DType.uint32
    inputs = [
        TensorType(DType.float32, ["total_seq_len", (heads + 4) * d], CPU),
        TensorType(u32, ["b1"], CPU),
    ]
    with Graph(
        "layer", input_types=[*inputs, TensorType(DType.float32, [64, d], CPU), *m.input_types()]
    ) as g:
        qkv, ro, freqs, kv, lens, lookup = g.inputs
        q, kv = ops.rope_split_store(
            qkv,
            ro,
            freqs,
            kv,
            lens,
            lookup,
            layer_idx=0,
            interleaved=False,
            n_heads=heads,
            n_kv_heads=2,
            head_dim=d,
        )
        g.output(
            ops.paged_attention(
                q.reshape(["total_seq_len", heads, d]), ro, kv, lens, lookup, layer_idx=0, scale=0.3
            )
        )
    model = fusegraph.compile(g, backend="eager")
    seqs = [m.claim(max_len=40) for _ in range(3)]
    freqs_t = freqs_table(64, d)
    history: dict[int, list[torch.Tensor]] = {s: [] for s in seqs}
    for tokens in ([5, 17, 1], [1, 1, 1], [1, 1, 1]):
        batch = m.prepare(seqs, tokens)
        x = torch.randn(sum(tokens), (heads + 4) * d)
        (y,) = model(x, batch.row_offsets, freqs_t, *batch.kv_inputs)
        m.commit(seqs, tokens)
        for i, s in enumerate(seqs):
            rows = x[int(batch.row_offsets[i]) : int(batch.row_offsets[i + 1])]
            history[s].append(rows)
            all_rows = torch.cat(history[s])
            n, pos = rows.shape[0], list(range(all_rows.shape[0]))
            q_all, k_all, v_all = torch.split(all_rows, [heads * d, 2 * d, 2 * d], dim=1)
            k_rot = rope_reference(k_all.reshape(-1, 2, d), pos, interleaved=False)
            q_rot = rope_reference(q_all[-n:].reshape(n, heads, d), pos[-n:], interleaved=False)
            want = dense_attention(q_rot, k_rot, v_all.reshape(-1, 2, d), len(pos) - n, 0.3)
            torch.testing.assert_close(
                y[int(batch.row_offsets[i]) : int(batch.row_offsets[i + 1])].double(),
                want,
                rtol=1e-5,
                atol=1e-5,
            )
            k, v = m.gather(s, layer_idx=0)
            torch.testing.assert_close(k.double(), k_rot, rtol=1e-5, atol=1e-5)
            assert torch.equal(v, v_all.reshape(-1, 2, d))
