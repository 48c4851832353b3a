"""fg.kv_cache.store: shape rules, store-then-gather through the manager, refusal before write."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from fusegraph import BufferType, DeviceRef, DType, Graph, TensorType, ops
from fusegraph.compiler.impls import LoweringContext, get_torch_impl
from fusegraph.ops.kv_cache import kv_cache_store_decomposed
from fusegraph.runtime import PagedKVCacheManager
from tests.ops.paged_reference import NO_BLOCK, make_step, only_op, u32, write_reference

CPU = DeviceRef.CPU()
F32, U32 = DType.float32, DType.uint32


def _types(kv_shape=(8, 2, 2, 4, 2, 8), x_heads: int = 2, x_dtype: DType = F32) -> list:
    return [
        BufferType(F32, list(kv_shape), CPU),
        TensorType(x_dtype, ["total_seq_len", x_heads, kv_shape[-1] if len(kv_shape) == 6 else 8], CPU),
        TensorType(U32, ["batch_plus_1"], CPU),
        TensorType(U32, ["batch"], CPU),
        TensorType(U32, ["batch", "max_pages"], CPU),
    ]


def _build(layer_idx: int = 1, key_or_value: int = 0, **kw) -> Graph:
    with Graph("store", input_types=_types(**kw)) as g:
        kv, x, ro, lens, lookup = g.inputs
        g.output(ops.kv_cache_store(kv, x, ro, lens, lookup, layer_idx=layer_idx, key_or_value=key_or_value))
    return g


def _store(kv, x, ro, lens, lookup, *, layer_idx=0, key_or_value=0, mode="custom", inplace=True, shape=None):
    g = _build(layer_idx, key_or_value, kv_shape=tuple(shape or kv.shape), x_heads=x.shape[1])
    op = only_op(g, "fg.kv_cache.store")
    return get_torch_impl(op)(op, kv, x, ro, lens, lookup, ctx=LoweringContext(mode=mode, inplace=inplace))


# --- shape rules ------------------------------------------------------------------------
def test_store__result_is_next_version_of_the_buffer() -> None:
    g = _build()
    assert g.outputs[0].type == _types()[0]
    assert "fg.kv_cache.store" in str(g)


def test_store__refuses_key_or_value_2() -> None:
    with pytest.raises(
        ValueError, match=r"fg.kv_cache.store: key_or_value must be 0 \(key\) or 1 \(value\), got 2"
    ):
        _build(key_or_value=2)


def test_store__refuses_layer_past_num_layers() -> None:
    with pytest.raises(ValueError, match=r"fg.kv_cache.store: layer_idx must be in 0..2-1, got layer_idx=2"):
        _build(layer_idx=2)


def test_store__refuses_x_with_other_kv_heads() -> None:
    with pytest.raises(
        ValueError, match=r"fg.kv_cache.store: x n_kv_heads \(4\) != kv_blocks n_kv_heads \(2\)"
    ):
        _build(x_heads=4)


def test_store__refuses_x_of_other_dtype() -> None:
    with pytest.raises(ValueError, match="fg.kv_cache.store: x dtype bfloat16 != kv_blocks dtype float32"):
        _build(x_dtype=DType.bfloat16)


def test_store__refuses_buffer_of_wrong_rank() -> None:
    with pytest.raises(ValueError, match="fg.kv_cache.store: kv_blocks must have rank 6"):
        _build(kv_shape=(8, 2, 2, 4, 16))


# --- numerics ---------------------------------------------------------------------------
@pytest.mark.parametrize(("mode", "inplace"), [("custom", True), ("custom", False), ("decomposed", False)])
def test_store__writes_exactly_the_reference_slots(mode: str, inplace: bool) -> None:
    torch.manual_seed(0)
    step = make_step([0, 6, 3], [5, 1, 9], page_size=4, num_blocks=16)
    kv = torch.randn(16, 2, 2, 4, 2, 8)
    x = torch.randn(step.total, 2, 8)
    want = write_reference(kv, x, step, layer=1, which=1)
    got = _store(kv.clone(), x, *step.metadata(), layer_idx=1, key_or_value=1, mode=mode, inplace=inplace)
    assert torch.equal(got, want)


def _params(page_size: int) -> SimpleNamespace:
    return SimpleNamespace(
        dtype=F32, n_kv_heads=2, head_dim=4, num_layers=2, page_size=page_size, devices=[CPU]
    )


@pytest.mark.parametrize("page_size", [1, 16, 128])
def test_store__then_gather_returns_what_was_written(page_size: int) -> None:
    torch.manual_seed(page_size)
    manager = PagedKVCacheManager(_params(page_size), num_blocks=max(8, 3 * (300 // page_size + 1)))
    seqs = [manager.claim(max_len=300) for _ in range(3)]
    written: dict[int, list[torch.Tensor]] = {s: [] for s in seqs}
    for tokens in ([130, 17, 1], [1, 1, 140], [2, 0, 1]):
        batch = manager.prepare(seqs, tokens)
        for which in (0, 1):
            x = torch.randn(sum(tokens), 2, 4)
            ro = batch.row_offsets
            _store(
                batch.kv_blocks,
                x,
                ro,
                batch.cache_lengths,
                batch.lookup_table,
                layer_idx=1,
                key_or_value=which,
            )
            for i, s in enumerate(seqs):
                if which == 0:
                    written[s].append(x[int(ro[i]) : int(ro[i + 1])])
        manager.commit(seqs, tokens)
    for s in seqs:
        k, _ = manager.gather(s, layer_idx=1)
        assert torch.equal(k, torch.cat(written[s]))
        assert manager.length(s) == k.shape[0]


def _overflowing_batch() -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """Sequence 0 fits; sequence 1 has one page of 4 and 3 cached tokens, then gets 2 more."""
    kv = torch.randn(4, 2, 1, 4, 2, 8)
    lookup = u32([[0, 1], [2, NO_BLOCK]])
    return kv, torch.randn(4, 2, 8), (u32([0, 2, 4]), u32([0, 3]), lookup)


@pytest.mark.parametrize(("mode", "inplace"), [("custom", True), ("custom", False), ("decomposed", True)])
def test_store__refuses_write_past_reserved_pages_before_writing(mode: str, inplace: bool) -> None:
    kv, x, meta = _overflowing_batch()
    before = kv.clone()
    with pytest.raises(ValueError, match=r"sequence 1 would write position 4, past its capacity of 4 tokens"):
        _store(kv, x, *meta, mode=mode, inplace=inplace)
    assert torch.equal(kv, before)


def test_store__refuses_block_id_past_num_blocks() -> None:
    kv, x, (ro, _, _) = _overflowing_batch()
    before = kv.clone()
    with pytest.raises(ValueError, match=r"sequence 0 would write position 1, past its capacity of 0 tokens"):
        torch.ops.fusegraph.kv_cache_store_(kv, x, ro, u32([0, 0]), u32([[9, 1], [2, 3]]), 0, 0)
    assert torch.equal(kv, before)


def test_store__custom_ops_pass_opcheck() -> None:
    kv, x, (ro, _, _) = _overflowing_batch()
    args = (kv, x, ro, u32([0, 1]), u32([[0, 1], [2, 3]]), 0, 1)
    torch.library.opcheck(torch.ops.fusegraph.kv_cache_store.default, args)
    torch.library.opcheck(torch.ops.fusegraph.kv_cache_store_.default, (kv.clone(), *args[1:]))


def test_store__decomposed_traces_with_symbolic_tokens_without_multi_index() -> None:
    step = make_step([1, 0], [3, 2], page_size=2, num_blocks=16)
    kv, x = torch.zeros(16, 2, 1, 2, 2, 8), torch.randn(5, 2, 8)

    def fn(kv, x, ro, lens, lookup):
        return kv_cache_store_decomposed(kv, x, ro, lens, lookup, 0, 1)

    gm = make_fx(fn, tracing_mode="symbolic")(kv, x, *step.metadata())
    targets = {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}
    assert "aten.index_put.default" in targets
    assert not {"aten.index.Tensor", "aten.index_put_.default"} & targets
    step2 = make_step([0, 2, 1], [1, 4, 2], page_size=2, num_blocks=16, seed=3)
    x2 = torch.randn(7, 2, 8)
    assert torch.equal(gm(kv, x2, *step2.metadata()), write_reference(kv, x2, step2, layer=0, which=1))
