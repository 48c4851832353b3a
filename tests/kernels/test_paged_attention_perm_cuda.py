"""`fusegraph::paged_attention` with a perm on CUDA (skipped without a GPU): the `[T, H·D]` output's columns come out
permuted (`out[:, j] = attn[:, perm[j]]`) whichever kernel stores them (the attention, or the split combine at
decode) or when `permute_rows` permutes them after (many rows), against dense causal attention over the K/V gathered
by hand (float64); a perm first seen inside a CUDA-graph capture takes the attend-then-permute path and replays right;
a bad perm is refused before any launch."""

from __future__ import annotations

import pytest
import torch

from fusegraph.runtime.kernels.paged_attention import paged_attention_triton
from tests.ops.paged_reference import dense_attention, make_step, read_reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

H, HKV, D, LAYER = 8, 2, 64, 1


def _case(
    cache_lengths: list[int], tokens: list[int], seed: int
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """(the op's CUDA arguments before perm, the float64 reference `[T, H·D]` on the CPU)."""
    step = make_step(cache_lengths, tokens, page_size=16, num_blocks=64, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    kv = torch.randn(64, 2, 2, 16, HKV, D, generator=gen).half()
    q = torch.randn(step.total, H, D, generator=gen).half()
    want = torch.empty(step.total, H, D, dtype=torch.float64)
    for b, (cached, new) in enumerate(zip(step.cache_lengths, step.tokens, strict=True)):
        k, v = (read_reference(kv, step, b, cached + new, LAYER, which) for which in (0, 1))
        rows = slice(step.row_offsets[b], step.row_offsets[b + 1])
        want[rows] = dense_attention(q[rows], k, v, cached, D**-0.5)
    args = tuple(t.cuda() for t in (q, *step.metadata()[:1], kv, *step.metadata()[1:]))
    return args, want.reshape(step.total, H * D)


def _call(args: tuple[torch.Tensor, ...], perm: torch.Tensor, apart: bool | None = None) -> torch.Tensor:
    """The op (its CUDA kernel picks the path), or the kernel told to store permuted / permute after (`apart`)."""
    if apart is None:
        return torch.ops.fusegraph.paged_attention(*args, LAYER, D**-0.5, None, perm)
    q, ro, kv, lengths, lookup = args
    return paged_attention_triton(q, ro, kv, lengths, lookup, LAYER, D**-0.5, None, perm, perm_apart=apart)


@pytest.mark.parametrize(
    ("cache_lengths", "tokens"),
    [([0, 5, 40], [17, 9, 3]), ([100, 7, 300, 33], [1, 1, 1, 1])],
    ids=["prefill-attention-stores", "decode-combine-stores"],
)
@pytest.mark.parametrize("apart", [None, False, True], ids=["op", "stored-permuted", "permute_rows-after"])
def test_paged_attention_perm_cuda__columns_come_out_permuted(
    cache_lengths: list[int], tokens: list[int], apart: bool | None
) -> None:
    args, want = _case(cache_lengths, tokens, seed=len(tokens))
    perm = torch.randperm(H * D, generator=torch.Generator().manual_seed(2)).to(torch.int32)
    got = _call(args, perm.cuda(), apart)
    assert got.shape == (len(want), H, D)
    torch.testing.assert_close(
        got.reshape(len(want), -1).cpu().double(), want[:, perm.long()], atol=2e-3, rtol=2e-3
    )


def test_paged_attention_perm_cuda__a_perm_first_seen_in_a_capture_replays_right() -> None:
    args, want = _case([30, 2], [1, 1], seed=9)
    _call(
        args, torch.arange(H * D, dtype=torch.int32, device="cuda")
    )  # compiles the kernels outside the capture
    torch.cuda.synchronize()
    perm = torch.randperm(H * D, generator=torch.Generator().manual_seed(4)).to(torch.int32).cuda()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = _call(args, perm)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(
        out.reshape(2, -1).cpu().double(), want[:, perm.cpu().long()], atol=2e-3, rtol=2e-3
    )


def test_paged_attention_perm_cuda__refuses_a_bad_perm_before_any_launch() -> None:
    args, _ = _case([3], [2], seed=1)
    bad = torch.arange(H * D, dtype=torch.int32)
    bad[10] = 3
    with pytest.raises(
        ValueError,
        match=r"^fg.attention.paged: perm must be a permutation of 0..511, got perm\[3\] = perm\[10\] = 3",
    ):
        _call(args, bad.cuda())
    with pytest.raises(ValueError, match=r"fg.attention.paged: perm must be int32 \[512\]"):
        _call(args, torch.arange(H * D, device="cuda"))


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_paged_attention_perm_cuda__eager_refuses_a_bad_perm_input_before_the_step_writes(
    cuda_graphs: bool,
) -> None:
    """A graph whose attention reads a perm graph input, after a store into the cache: the eager CUDA runtime reads
    the perm before the step (`InputChecks.check_perms`), so a bad one is refused and the cache keeps every byte;
    then a good perm runs and gives the output gathered through it."""
    import fusegraph
    from fusegraph import BufferType, DeviceRef, DType, Graph, TensorType, ops

    cuda, f16, u32 = DeviceRef.GPU(), DType.float16, DType.uint32
    types: list[TensorType | BufferType] = [TensorType(f16, ["t", H, D], cuda), TensorType(u32, ["b1"], cuda),
             BufferType(f16, [64, 2, 2, 16, HKV, D], cuda), TensorType(u32, ["b"], cuda),
             TensorType(u32, ["b", "p"], cuda), TensorType(f16, ["t", HKV, D], cuda),
             TensorType(DType.int32, [H * D], cuda)]  # fmt: skip
    with Graph("store_then_attend", input_types=types) as g:
        q, ro, kv, lens, lookup, k, perm = g.inputs
        kv = ops.kv_cache_store(kv, k, ro, lens, lookup, layer_idx=LAYER, key_or_value=0)
        g.output(ops.paged_attention(q, ro, kv, lens, lookup, layer_idx=LAYER, scale=D**-0.5, perm=perm))
    model = fusegraph.compile(g, device="cuda", cuda_graphs=cuda_graphs, pipeline=None)
    (q, ro, kv, lens, lookup), _ = _case([30, 2], [1, 1], seed=3)
    k = torch.randn(2, HKV, D, device="cuda").half()
    bad = torch.arange(H * D, dtype=torch.int32)
    bad[7] = H * D
    before = kv.clone()
    with pytest.raises(
        ValueError, match=r"^fg.attention.paged: perm must be a permutation of 0..511, got perm\[7\] = 512"
    ):
        model(q, ro, kv, lens, lookup, k, bad.cuda())
    torch.cuda.synchronize()
    assert torch.equal(
        kv.view(torch.int16), before.view(torch.int16)
    )  # the store before the attention never ran
    perm = torch.randperm(H * D, generator=torch.Generator().manual_seed(8)).to(torch.int32).cuda()
    (got,) = model(q, ro, kv, lens, lookup, k, perm)
    plain = torch.ops.fusegraph.paged_attention(q, ro, kv, lens, lookup, LAYER, D**-0.5, None)
    assert torch.equal(got.reshape(2, -1), plain.reshape(2, -1)[:, perm.long()])
