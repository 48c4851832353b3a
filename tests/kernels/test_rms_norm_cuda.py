"""The Triton rms_norm kernel compiled on a CUDA GPU (skipped elsewhere), against the float64 math:
fp16/bf16/fp32, D in {128, 4096, 14336}, 1..64 rows, with and without perm, eager and replayed
from a CUDA graph; `torch.ops.fusegraph.rms_norm` and the eager runtime dispatch to it."""

from __future__ import annotations

import pytest
import torch

import fusegraph
from fusegraph import DeviceRef, DType, Graph, TensorType, ops
from tests.ops.test_rms_norm_perm import assert_within_ulps, reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# fp16/bf16: the float32 math rounded once; fp32: rsqrt.approx and a tree sum, a few ulps.
ULPS = {torch.float16: 1.0, torch.bfloat16: 1.0, torch.float32: 8.0}
KERNEL = "_rms_norm_kernel"


def _operands(
    rows: int, d: int, dtype: torch.dtype, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(rows, d, generator=gen) * 3).to(dtype)
    w = (torch.rand(d, generator=gen) + 0.5).to(dtype)
    return x.cuda(), w.cuda(), torch.randperm(d, generator=gen).to(torch.int32).cuda()


def _kernel_names(fn: object) -> list[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()  # type: ignore[operator]
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("d", [128, 4096, 14336])
@pytest.mark.parametrize("rows", [1, 7, 64])
@pytest.mark.parametrize("with_perm", [False, True])
def test_rms_norm_rows_cuda__matches_the_math(dtype: torch.dtype, d: int, rows: int, with_perm: bool) -> None:
    from fusegraph.runtime.kernels.rms_norm import rms_norm_rows

    x, w, perm = _operands(rows, d, dtype, seed=rows * d)
    p = perm if with_perm else None
    y = rms_norm_rows(x, w, 1e-5, p)
    assert y.dtype == dtype and y.shape == x.shape
    assert_within_ulps(
        y.cpu(), reference(x.cpu(), w.cpu(), 1e-5, None if p is None else p.cpu()), ULPS[dtype]
    )


@pytest.mark.parametrize("d", [128, 4096, 14336])
@pytest.mark.parametrize("rows", [1, 16])
@pytest.mark.parametrize("split", [None, 4])
def test_rms_norm_rows_cuda__permuted_is_the_plain_result_gathered_bit_for_bit(
    d: int, rows: int, split: int | None
) -> None:
    from fusegraph.runtime.kernels.rms_norm import add_rms_norm_rows, rms_norm_rows

    x, w, perm = _operands(rows, d, torch.float16, seed=d + rows)
    r = _operands(rows, d, torch.float16, seed=7)[0]
    y = rms_norm_rows(x, w, 1e-5, perm, split=split)
    assert torch.equal(y, rms_norm_rows(x, w, 1e-5).index_select(-1, perm.long()))
    s, y = add_rms_norm_rows(x, r, w, 1e-5, perm, split=split)
    s0, y0 = add_rms_norm_rows(x, r, w, 1e-5)
    assert torch.equal(s, s0) and torch.equal(y, y0.index_select(-1, perm.long()))


@pytest.mark.parametrize("rows", [15, 16, 64, 200])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_rms_norm_op_kernels_cuda__from_separate_perm_rows_permute_after_the_norm_bit_for_bit(
    rows: int, dtype: torch.dtype
) -> None:
    """From SEPARATE_PERM_ROWS rows (fp16/bf16) the op kernels run the plain norm, then
    `fg_permute_rows`; fewer rows, or fp32, gather in the norm kernel. Either way: the plain
    result gathered, bit for bit, also replayed from a CUDA graph."""
    from fusegraph.runtime.kernels.rms_norm import (
        SEPARATE_PERM_ROWS,
        add_rms_norm_cuda,
        add_rms_norm_rows,
        rms_norm_cuda,
        rms_norm_rows,
    )

    x, w, perm = _operands(rows, 4096, dtype, seed=rows)
    r = _operands(rows, 4096, dtype, seed=11)[0]
    apart = rows >= SEPARATE_PERM_ROWS and dtype != torch.float32
    names = _kernel_names(lambda: rms_norm_cuda(x, w, perm, 1e-5))
    assert ("fg_permute_rows" in names) == apart, names
    add_rms_norm_cuda(x, r, w, perm, 1e-5)  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = rms_norm_cuda(x, w, perm, 1e-5)
        s, ys = add_rms_norm_cuda(x, r, w, perm, 1e-5)
    x.copy_(_operands(rows, 4096, dtype, seed=rows + 1)[0])
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(y, rms_norm_rows(x, w, 1e-5).index_select(-1, perm.long()))
    s0, y0 = add_rms_norm_rows(x, r, w, 1e-5)
    assert torch.equal(s, s0) and torch.equal(ys, y0.index_select(-1, perm.long()))


def test_rms_norm_rows_cuda__chunks_rows_longer_than_max_block() -> None:
    from fusegraph.runtime.kernels.rms_norm import MAX_BLOCK, rms_norm_rows

    x, w, perm = _operands(3, MAX_BLOCK + 1000, torch.float16, seed=11)
    y = rms_norm_rows(x, w, 1e-6, perm)
    assert_within_ulps(y.cpu(), reference(x.cpu(), w.cpu(), 1e-6, perm.cpu()), 1.0)


@pytest.mark.parametrize("with_perm", [False, True])
def test_rms_norm_rows_cuda__replays_from_a_cuda_graph(with_perm: bool) -> None:
    from fusegraph.runtime.kernels.rms_norm import rms_norm_rows

    x, w, perm = _operands(32, 4096, torch.float16, seed=5)
    p = perm if with_perm else None
    rms_norm_rows(x, w, 1e-5, p)  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = rms_norm_rows(x, w, 1e-5, p)
    for seed in (1, 2):
        fresh, _, _ = _operands(32, 4096, torch.float16, seed=seed)
        x.copy_(fresh)
        graph.replay()
        torch.cuda.synchronize()
        assert_within_ulps(
            y.cpu(), reference(fresh.cpu(), w.cpu(), 1e-5, None if p is None else p.cpu()), 1.0
        )


def test_rms_norm_custom_op_cuda__runs_the_triton_kernel_and_fakes_match() -> None:
    x, w, perm = _operands(4, 256, torch.bfloat16, seed=3)
    torch.ops.fusegraph.rms_norm(x, w, perm, 1e-6)  # the first call checks perm, puts w in its order
    names = _kernel_names(lambda: torch.ops.fusegraph.rms_norm(x, w, perm, 1e-6))
    kernels = [n for n in names if not n.startswith(("Memcpy", "Memset"))]
    assert len(kernels) == 1 and KERNEL in kernels[0], names  # no cast/pow/mean/rsqrt/mul, no permute
    torch.library.opcheck(torch.ops.fusegraph.rms_norm.default, (x, w, perm, 1e-6))


def _decode_graph(d: int) -> Graph:
    """A decoder block's two norms as the act-order fold leaves them: the attention norm feeding
    a permuted GEMM input, the MLP norm plain; qk-norm over [t, heads, 128]."""
    f16 = DType.float16
    cpu = DeviceRef.CPU()
    with Graph("norms", input_types=[TensorType(f16, ["t", d], cpu)]) as g:
        (x,) = g.inputs
        w1 = g.add_weight("input_layernorm.weight", TensorType(f16, [d], cpu))
        w2 = g.add_weight("post_attention_layernorm.weight", TensorType(f16, [d], cpu))
        qk = g.add_weight("q_norm.weight", TensorType(f16, [128], cpu))
        perm = g.add_weight("q_proj.perm", TensorType(DType.int32, [d], cpu))
        h = ops.rms_norm(x, w1, 1e-5, perm)
        heads = ops.rms_norm(x.reshape(["t", d // 128, 128]), qk, 1e-6)
        g.output(h, ops.rms_norm(h, w2, 1e-5), heads)
    return g


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_rms_norm_eager_cuda__decode_shaped_graph_matches_the_math(cuda_graphs: bool) -> None:
    d = 1024
    _, w1, perm = _operands(1, d, torch.float16, seed=1)
    _, w2, _ = _operands(1, d, torch.float16, seed=2)
    _, qk, _ = _operands(1, 128, torch.float16, seed=3)
    weights = {"input_layernorm.weight": w1, "post_attention_layernorm.weight": w2, "q_norm.weight": qk,
               "q_proj.perm": perm}  # fmt: skip
    model = fusegraph.compile(_decode_graph(d), device="cuda", weights=weights, cuda_graphs=cuda_graphs)
    for step, t in enumerate((5, 1, 1, 1)):  # a prefill, then decode steps (replays)
        x, _, _ = _operands(t, d, torch.float16, seed=10 + step)
        h, h2, heads = model(x)
        want_h = reference(x.cpu(), w1.cpu(), 1e-5, perm.cpu())
        assert_within_ulps(h.cpu(), want_h, 1.0)
        assert_within_ulps(h2.cpu(), reference(h.cpu(), w2.cpu(), 1e-5), 1.0)
        assert_within_ulps(heads.cpu(), reference(x.cpu().reshape(t, d // 128, 128), qk.cpu(), 1e-6), 1.0)
    if cuda_graphs:  # the eager launches are what the profiler lists for certain
        return
    x, _, _ = _operands(1, d, torch.float16, seed=99)
    names = _kernel_names(lambda: model(x))
    assert sum(KERNEL in n for n in names) == 3, names
    assert not any("indexselect" in n.lower().replace("_", "") or "rsqrt" in n.lower() for n in names), names


def test_rms_norm_custom_op_cuda__checks_perm_once_and_never_inside_a_capture() -> None:
    x, w, perm = _operands(8, 512, torch.float16, seed=4)
    bad = perm.clone()
    bad[3] = 512
    with pytest.raises(
        ValueError, match=r"^fg.rms_norm: perm must be a permutation of 0..511, got perm\[3\] = 512"
    ):
        torch.ops.fusegraph.rms_norm(x, w, bad, 1e-6)
    torch.ops.fusegraph.rms_norm(x, w, perm, 1e-6)  # compiles the kernel outside the capture
    torch.cuda.synchronize()
    unseen = perm.flip(0).contiguous()  # not checked yet: a capture must not read it (no sync)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = torch.ops.fusegraph.rms_norm(x, w, unseen, 1e-6)
    graph.replay()
    torch.cuda.synchronize()
    assert_within_ulps(y.cpu(), reference(x.cpu(), w.cpu(), 1e-6, unseen.cpu()), 1.0)
