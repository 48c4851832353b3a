"""PagedKVCacheManager: claiming and releasing blocks, step metadata, refusals, gather, and
one ragged prefill + decode run through a compiled graph."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import fusegraph
from fusegraph import BufferType, DeviceRef, DType, Graph, TensorType, ops
from fusegraph.runtime import PagedKVCacheManager
from tests.ops.paged_reference import NO_BLOCK, dense_attention, freqs_table, rope_reference

CPU = DeviceRef.CPU()


def _params(page_size: int = 4, **kw) -> SimpleNamespace:
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


def test_manager__claim_reserves_ceil_pages_and_release_returns_them() -> None:
    m = PagedKVCacheManager(_params(page_size=4), num_blocks=6)
    a, b = m.claim(max_len=5), m.claim(max_len=4)
    assert (a, b) != (b, a) and m.free_blocks == 3
    m.release(a)
    assert m.free_blocks == 5
    with pytest.raises(ValueError, match="release: unknown sequence 0"):
        m.release(a)


def test_manager__claim_refuses_when_blocks_run_out() -> None:
    m = PagedKVCacheManager(_params(page_size=4), num_blocks=3)
    m.claim(max_len=8)
    with pytest.raises(
        ValueError, match=r"claim: max_len=5 needs 2 blocks of 4 tokens, but only 1 of 3 are free"
    ):
        m.claim(max_len=5)
    assert m.free_blocks == 1


def test_manager__prepare_builds_ragged_metadata() -> None:
    m = PagedKVCacheManager(_params(page_size=4), num_blocks=8)
    seqs = [m.claim(max_len=8), m.claim(max_len=3)]
    m.commit(seqs, [2, 1])
    batch = m.prepare(seqs, [5, 1])
    assert batch.row_offsets.dtype == torch.uint32
    assert batch.row_offsets.tolist() == [0, 5, 6]
    assert batch.cache_lengths.tolist() == [2, 1]
    assert batch.lookup_table.to(torch.int64).tolist() == [[0, 1], [2, NO_BLOCK]]
    assert batch.kv_inputs[0] is m.kv_blocks
    assert batch.kv_inputs[1:] == (batch.cache_lengths, batch.lookup_table)


def test_manager__prepare_refuses_a_step_past_the_reserved_length() -> None:
    m = PagedKVCacheManager(_params(page_size=4), num_blocks=8)
    seqs = [m.claim(max_len=8), m.claim(max_len=6)]
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


def test_manager__gather_reads_positions_across_pages() -> None:
    m = PagedKVCacheManager(_params(page_size=2), num_blocks=8)
    m.claim(max_len=2)  # so the next sequence's pages do not start at block 0
    s = m.claim(max_len=5)
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
    freqs_t, history = freqs_table(64, d), {s: [] for s in seqs}
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
