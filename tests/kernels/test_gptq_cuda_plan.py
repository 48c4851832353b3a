"""The pure-Python parts of the CUDA small-M GPTQ kernel, on the CPU: the plan (which calls it
takes, split-K, register caps), the generated source and its parameter checks, the Triton fallback."""

from __future__ import annotations

import pytest
import torch

from fusegraph.runtime.kernels.gptq_cuda_src import KernelSpec, kernel_source, smem_bytes
from fusegraph.runtime.kernels.gptq_plan import cuda_small_m_plan


@pytest.mark.parametrize(
    ("n", "k", "split", "warps"),
    [(6144, 4096, 1, 8), (4096, 4096, 2, 8), (28672, 4096, 1, 4), (4096, 14336, 2, 8)],
)
def test_cuda_plan__one_cta_of_8_warps_an_sm_where_it_fits_else_4_warps_over_1_4_ctas_an_sm(
    n: int, k: int, split: int, warps: int
) -> None:
    plan = cuda_small_m_plan(1, n, k, 4, 132)
    assert plan is not None and (plan["split_k"], plan["warps"]) == (split, warps)
    assert (k // 128) % split == 0 and plan["cluster"] == (split == 2)
    if warps == 8:  # every strip's split in one wave of one CTA an SM, the largest such split
        assert (n // 64) * split <= 132 < (n // 64) * 2 * split and plan["min_blocks"] == 1
    else:  # more strips than SMs: 1.4 CTAs an SM or more, 3 CTAs an SM by registers
        assert (n // 64) * split >= 1.4 * 132 and plan["min_blocks"] == 3


def test_cuda_plan__keeps_the_staged_x_slice_within_64_kb_at_m_16() -> None:
    plan = cuda_small_m_plan(16, 4096, 14336, 4, 132)
    assert plan is not None
    bps = 14336 // 128 // plan["split_k"]
    assert (
        16 * bps * 256 <= 64 * 1024
        and plan["split_k"] == 7
        and not plan["cluster"]
        and plan["min_blocks"] == 2
    )


@pytest.mark.parametrize(
    ("m", "n", "k", "bits", "bf16"),
    [(0, 256, 512, 4, False), (17, 256, 512, 4, False), (1, 96, 512, 4, False), (1, 256, 500, 4, False),
     (1, 256, 512, 8, True), (1, 256, 512, 5, False)],
)  # fmt: skip
def test_cuda_plan__refuses_what_the_kernel_does_not_take(
    m: int, n: int, k: int, bits: int, bf16: bool
) -> None:
    assert cuda_small_m_plan(m, n, k, bits, 132, bf16=bf16) is None


def test_kernel_source__carries_the_spec_as_defines() -> None:
    spec = KernelSpec(bits=8, bf16=False, mt=2, warps=4, split=6, cluster=True, has_perm=True,
                      zero_v1=False)  # fmt: skip
    src = kernel_source(spec)
    for line in ("#define BITS 8", "#define MT 2", "#define NWARPS 4", "#define SPLIT 6", "#define CLUSTER 1",
                 "#define HAS_PERM 1", "#define ZERO_V1 0"):  # fmt: skip
        assert line in src
    assert "%(" not in src and 'extern "C" __global__ void' in src and "#include" not in src
    # the cluster's sum: a release barrier before the remote loads, an execution-only one after the stores
    assert (
        src.index("cluster_sync();\n  {") < src.index("cluster_sum(smem_u32") < src.index("cluster_exit();")
    )
    assert "barrier.cluster.arrive.relaxed.aligned" in src
    # the 4 warps' partial sums + 16 rows of x (2 blocks, padded) + the CTA's sums
    assert smem_bytes(spec, 16, 2) == 4 * 16 * 64 * 4 + 16 * (2 * 64 + 4) * 4 + 16 * 64 * 4
    # + with a cp.async ring, each warp's stages in use (min(cpa, its blocks)): 8 KB of words at 8 bits, 128 B of
    # scales and 64 B of zeros each
    ring = KernelSpec(8, False, 1, 4, 2, True, False, True, cpa=3)
    assert "#define CPA 3" in kernel_source(ring) and "cpa_read(" in kernel_source(ring)
    base = 4 * 1 * 64 * 4 + (8 * 64 + 4) * 4 + 64 * 4
    assert smem_bytes(ring, 1, 8) == base + 4 * 2 * (8192 + 128 + 64)  # 2 blocks a warp: 2 stages


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"bits": 3}, "bits must be 4 or 8"), ({"bits": 8, "bf16": True}, "bf16 needs bits=4"),
     ({"mt": 3}, "mt must be 1 or 2"), ({"warps": 3}, "warps must be 1, 2, 4 or 8"), ({"split": 9, "cluster": True}, "cluster needs"),
     ({"tma": 1}, "tma must be 0 or a ring"), ({"bufs": 5}, "bufs must be 2..4"), ({"bufs": 3, "tma": 2}, "2 with tma"),
     ({"pdl": True, "tma": 2}, "pdl needs tma off"), ({"xfull": True}, "xfull needs has_perm"),
     ({"cpa": 1}, "cpa must be 0 or a ring of 2..16"), ({"cpa": 17}, "cpa must be 0 or a ring"),
     ({"cpa": 3, "tma": 2}, "tma, xfull, fold off"), ({"cpa": 3, "bufs": 3}, "cpa keeps one block in registers")],
)  # fmt: skip
def test_kernel_spec__names_the_bad_field(kwargs: dict[str, object], match: str) -> None:
    base: dict[str, object] = {"bits": 4, "bf16": False, "mt": 1, "warps": 4, "split": 2,
                               "cluster": False, "has_perm": False, "zero_v1": True}  # fmt: skip
    with pytest.raises(ValueError, match=match):
        KernelSpec(**(base | kwargs))  # type: ignore[arg-type]


def test_maybe_gptq_cuda__leaves_cpu_tensors_and_forced_triton_kernels_to_triton() -> None:
    from fusegraph.runtime.kernels.gptq_cuda import cuda_path_status, maybe_gptq_cuda

    x = torch.randn(1, 128, dtype=torch.float16)
    qw = torch.zeros(1, 16, 64, dtype=torch.int32)
    s = torch.ones(1, 64, dtype=torch.float16)
    qz = torch.zeros(1, 8, dtype=torch.int32)
    for config in (None, {"kernel": "gemv"}, {"cuda": False}):
        assert (
            maybe_gptq_cuda(x, qw, s, qz, None, bits=4, group_size=128, zero_format="v1", config=config)
            is None
        )
    assert cuda_path_status().split(":")[0] in ("cuda", "triton")


def test_gptq_cuda_matmul__refuses_a_group_size_it_cannot_step_through() -> None:
    from fusegraph.runtime.kernels.gptq_cuda import gptq_cuda_matmul

    x = torch.randn(1, 256, dtype=torch.float16)
    qw, qz = torch.zeros(1, 32, 64, dtype=torch.int32), torch.zeros(2, 8, dtype=torch.int32)
    s = torch.ones(2, 64, dtype=torch.float16)
    for gs in (0, -128, 384):  # checked before anything is launched: never a kernel that loops forever
        with pytest.raises(
            ValueError, match=f"group_size {gs} must be -1 or a positive multiple of 128 dividing K"
        ):
            gptq_cuda_matmul(x, qw, s, qz, None, bits=4, group_size=gs, zero_format="v1", plan={"split_k": 1})


def test_cuda_plan__leaves_act_order_and_8_bit_past_m_4_to_triton_unless_forced() -> None:
    for kwargs in ({"act_order": True}, {}):
        bits = 4 if kwargs else 8
        assert cuda_small_m_plan(4, 6144, 4096, bits, 132, **kwargs) is not None
        assert cuda_small_m_plan(5, 6144, 4096, bits, 132, **kwargs) is None
        assert cuda_small_m_plan(16, 6144, 4096, bits, 132, forced=True, **kwargs) is not None
    assert cuda_small_m_plan(16, 6144, 4096, 4, 132) is not None  # plain 4-bit: every M to 16


# ---- the mid-M kernel (gptq_cuda_mid.py) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "k", "split", "warps"),
    [(6144, 4096, 8, 4), (4096, 4096, 8, 2), (28672, 4096, 2, 4), (4096, 14336, 7, 2)],
)
def test_cuda_mid_plan__cluster_split_k_and_4_or_2_strips_a_cta_as_measured_fastest(
    n: int, k: int, split: int, warps: int
) -> None:
    from fusegraph.runtime.kernels.gptq_plan import cuda_mid_m_plan

    for m in (16, 32, 64):
        plan = cuda_mid_m_plan(m, n, k, 4, 132)
        # at M ≤ 16 (two n-tiles), CTAs of 4 strips (9th session) and of 2 fold the scale out of the loop, and those
        # of 2 stream through a 3-stage cp.async ring (15th session, chained: down 1.11x the ring alone)
        sfold = {"sfold": True} if m <= 16 else {}
        ring = {"cpa": 3} if m <= 16 and warps == 2 else {}
        want = {"split_k": split, "warps": warps, "cluster": True, "min_blocks": 8 // warps, "mid": True}
        assert plan == want | sfold | ring
    assert (n // 64 // warps) * split >= 1.4 * 132 and (k // 128) % split == 0 and split <= 8


def test_cuda_mid_plan__one_x_tile_doubles_a_short_split_at_16_warps_an_sm() -> None:
    from fusegraph.runtime.kernels.gptq_plan import cuda_mid_m_plan

    # gate_up at M <= 8: 224 CTAs (< 2 an SM) -> split 4, 448 CTAs at 4 an SM: all resident at once
    for m in (1, 4, 8):
        for bits in (4, 8):
            plan = cuda_mid_m_plan(m, 28672, 4096, bits, 132, forced=True)
            assert plan is not None and (plan["split_k"], plan["min_blocks"]) == (4, 4)
            assert (28672 // 256) * plan["split_k"] <= plan["min_blocks"] * 132
    # not past one n-tile of x, not bf16 or 2/3 bits (not measured), not where the split is at its cap (qkv)
    unchanged = [cuda_mid_m_plan(9, 28672, 4096, 4, 132), cuda_mid_m_plan(1, 28672, 4096, 4, 132, bf16=True, forced=True),
                 cuda_mid_m_plan(1, 28672, 4096, 3, 132, forced=True)]  # fmt: skip
    assert all(p is not None and (p["split_k"], p["min_blocks"]) == (2, 2) for p in unchanged)
    # qkv: the split is at its cap (8): 4 strips a CTA, 192 CTAs (15th session: 2 strips, the 7th's rule at 4 bits and
    # M ≤ 4, was 1-2% slower)
    for m, bits in ((1, 4), (4, 4), (5, 4), (8, 4), (1, 8)):
        qkv = cuda_mid_m_plan(m, 6144, 4096, bits, 132, forced=True)
        assert qkv is not None and (qkv["split_k"], qkv["warps"], qkv["min_blocks"]) == (8, 4, 2)
        assert qkv["l2pf"] == 2  # and each warp's second block asked of L2 with its first (measured faster)
    # the doubled split (gate_up) and two n-tiles (qkv M=9) keep no L2 prefetch ahead (slower or not measured)
    assert "l2pf" not in (cuda_mid_m_plan(1, 28672, 4096, 4, 132) or {"l2pf": 0})
    assert "l2pf" not in (cuda_mid_m_plan(9, 6144, 4096, 4, 132) or {"l2pf": 0})


def test_cuda_mid_plan__folds_the_scale_out_of_the_loop_at_one_x_tile_where_the_registers_allow() -> None:
    from fusegraph.runtime.kernels.gptq_plan import cuda_mid_m_plan

    def sfold(m: int, n: int, k: int, bits: int) -> bool:
        plan = cuda_mid_m_plan(m, n, k, bits, 132, forced=True)
        assert plan is not None
        return bool(plan.get("sfold"))

    assert all(sfold(m, n, k, 4) for m in (1, 8) for n, k in ((6144, 4096), (28672, 4096), (4096, 14336)))
    # two n-tiles: at 4 bits, on CTAs of 4 strips (qkv, gate_up) and of 2 (down), not at 8 bits
    assert sfold(9, 6144, 4096, 4) and sfold(16, 28672, 4096, 4) and sfold(16, 4096, 14336, 4)
    assert not sfold(16, 6144, 4096, 8) and not sfold(17, 6144, 4096, 4)
    # 8 bits: where a thread keeps 255 registers (qkv: 4 warps x 2 CTAs an SM), not at 128 (gate_up: 4 x 4 spills)
    assert sfold(1, 6144, 4096, 8) and sfold(8, 4096, 4096, 8) and not sfold(1, 28672, 4096, 8)


def test_cuda_plan__routes_small_mid_and_large_m() -> None:
    from fusegraph.runtime.kernels.gptq_plan import cuda_mid_m_plan, cuda_plan

    def kernel(m: int, n: int, k: int, bits: int = 4, **kw: object) -> str:
        plan = cuda_plan(m, n, k, bits, 132, **kw)  # type: ignore[arg-type]
        return "triton" if plan is None else "mid" if plan.get("mid") else "small"

    # the mid-M kernel at M ≤ 8 on wide shapes (N ≥ 6144: qkv, gate_up; measured faster), the small-M one elsewhere;
    # at M=1 too (15th session: qkv 1.03x the small-M kernel's one CTA an SM with its ring)
    assert [kernel(m, 6144, 4096) for m in (1, 2, 8, 9, 16, 17, 64, 65)] == [
        "mid", "mid", "mid", "mid", "mid", "mid", "mid", "triton"
    ]  # fmt: skip
    assert (
        kernel(1, 28672, 4096) == "mid" and kernel(1, 6144, 4096, bits=8) == "mid"
    )  # no such plan fits / no ring
    # down: the small-M kernel while its one CTA of 8 warps an SM fits (x's slice ≤ 64 KB: M ≤ 4), then the mid-M
    # kernel (15th session, M 5..8: 1.12-1.25x its 4-warp CTAs)
    assert [kernel(m, 4096, 14336) for m in (1, 4, 5, 8, 9)] == ["small", "small", "mid", "mid", "mid"]
    # not where that one CTA fits at no M (K/128 < 8 blocks; not measured): the small-M kernel's 4-warp CTAs as before
    assert [kernel(m, 256, 512) for m in (1, 5, 8)] == ["small", "small", "small"]
    # o_proj (2048 strip-blocks) is below the work threshold past M=16 (measured slower than Triton there); at M 9..16
    # the small-M kernel's one CTA of 8 warps an SM fits it (chained, 1.11x the mid-M kernel; after act-order's
    # permutation of x 1.00-1.11x)
    assert [kernel(m, 4096, 4096) for m in (9, 16, 17, 64)] == ["small", "small", "triton", "triton"]
    assert [kernel(m, 4096, 4096, act_order=True) for m in (9, 16)] == ["small", "small"]
    assert kernel(64, 4096, 4096, forced=True) == "mid"
    assert kernel(12, 6144, 4096, mid=False) == "small" and kernel(4, 6144, 4096, mid=True) == "mid"
    assert kernel(17, 6144, 4096, mid=False) == "triton"
    # 8 bits: the mid-M kernel to M=16 on N ≥ 6144, at M 9..16 elsewhere, past 16 only on N ≥ 16384 (gate_up)
    # unless forced; on narrower shapes the small-M kernel to M=4, the mid-M one at 5..8 (Triton 1.35-1.43x slower)
    assert [kernel(m, 6144, 4096, bits=8) for m in (4, 5, 8, 9, 16, 17, 64)] == [
        "mid", "mid", "mid", "mid", "mid", "triton", "triton"
    ]  # fmt: skip
    assert [kernel(m, 4096, 4096, bits=8) for m in (4, 5, 8, 9, 17)] == [
        "small",
        "mid",
        "mid",
        "mid",
        "triton",
    ]
    assert kernel(5, 4096, 4096, bits=8, bf16=True) == "triton"  # no 8-bit bf16 CUDA kernel
    assert [kernel(m, 28672, 4096, bits=8) for m in (16, 40, 64, 65)] == ["mid", "mid", "mid", "triton"]
    assert (cuda_plan(40, 6144, 4096, 8, 132, forced=True) or {}).get("mid") is True
    assert cuda_plan(12, 6144, 4096, 8, 132, bf16=True) is None  # bf16 at 8 bits: Triton
    # act-order with the in-kernel gather (xperm=False): likewise
    for m in (40, 12):
        assert cuda_plan(m, 6144, 4096, 4, 132, act_order=True, xperm=False) is None
    assert (cuda_plan(40, 6144, 4096, 4, 132, act_order=True, xperm=False, forced=True) or {}).get(
        "mid"
    ) is True
    assert (cuda_mid_m_plan(40, 192, 512, 4, 132) or {}).get("warps") == 1  # N/64 odd
    assert (cuda_mid_m_plan(40, 384, 512, 4, 132) or {}).get("warps") == 2
    assert cuda_mid_m_plan(40, 256, 512, 8, 132, bf16=True, forced=True) is None
    assert cuda_mid_m_plan(65, 6144, 4096, 4, 132, forced=True) is None


def test_mid_kernel_source__carries_the_spec_and_the_shared_memory_fits_both_uses() -> None:
    from fusegraph.runtime.kernels.gptq_cuda_mid import MidSpec, mid_kernel_source, mid_smem_bytes

    spec = MidSpec(bits=4, bf16=True, mt=8, warps=4, split=8, cluster=True, has_perm=False, zero_v1=True,
                   min_blocks=2)  # fmt: skip
    src = mid_kernel_source(spec)
    for line in ("#define BITS 4", "#define BF16 1", "#define MT 8", "#define NWARPS 4", "#define SPLIT 8",
                 "#define CLUSTER 1", "#define HAS_PERM 0", "#define MIN_BLOCKS 2"):  # fmt: skip
        assert line in src
    assert "%(" not in src and "fg_gptq_mid_m" in src and "#include" not in src
    assert (
        src.index("cluster_sync();\n  {") < src.index("cluster_sum(smem_u32") < src.index("cluster_exit();")
    )
    # two staged blocks of x (64 rows, 68 words) or the [64][256] fp32 sums, whichever is larger
    assert mid_smem_bytes(spec, 64) == max(2 * 64 * 68 * 4, 64 * 256 * 4) == 65536
    assert mid_smem_bytes(MidSpec(4, False, 3, 1, 1, False, False, True), 17) == 2 * 24 * 68 * 4
    folded = mid_kernel_source(MidSpec(4, False, 1, 4, 8, True, False, True, sfold=True))
    assert "#define SFOLD 1" in folded and "#define SFOLD 0" in src
    # the cp.async ring: the stages in use (min(cpa, bps)) of x's block (8 rows of 68 words) and each warp's words
    # (4 KB at 4 bits), scales (128 B) and zeros (32 B), or the sums, whichever is larger
    ring = MidSpec(4, False, 1, 2, 8, True, False, True, cpa=5)
    assert "#define CPA 5" in mid_kernel_source(ring) and "cpa_words(" in mid_kernel_source(ring)
    assert mid_smem_bytes(ring, 1, bps=4) == 4 * (8 * 68 * 4 + 2 * (4096 + 128 + 32))
    assert mid_smem_bytes(ring, 1, bps=16) == 5 * (8 * 68 * 4 + 2 * (4096 + 128 + 32))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"bits": 3}, "bits must be 4 or 8"), ({"bits": 8, "bf16": True}, "bf16 needs bits=4"),
     ({"mt": 9}, "mt must be 1..8"), ({"warps": 3}, "warps must be 1, 2, 4 or 8"),
     ({"split": 9, "cluster": True}, "cluster needs"), ({"min_blocks": 0}, "min_blocks ≥ 1"),
     ({"bufs": 0}, "bufs 1..4"), ({"pdl": True, "has_perm": True, "perm_ahead": True}, "not with pdl"),
     ({"sfold": True, "mt": 3}, "sfold needs mt <= 2"), ({"cpa": 1}, "cpa must be 0 or a ring of 2..16"),
     ({"cpa": 3, "bufs": 2}, "with bufs 1"), ({"cpa": 3, "has_perm": True, "perm_ahead": True}, "perm_ahead off")],
)  # fmt: skip
def test_mid_spec__names_the_bad_field(kwargs: dict[str, object], match: str) -> None:
    from fusegraph.runtime.kernels.gptq_cuda_mid import MidSpec

    base: dict[str, object] = {"bits": 4, "bf16": False, "mt": 8, "warps": 4, "split": 2,
                               "cluster": False, "has_perm": False, "zero_v1": True}  # fmt: skip
    with pytest.raises(ValueError, match=match):
        MidSpec(**(base | kwargs))  # type: ignore[arg-type]


# ---- act-order: x permuted once past M = 4, then the plain plan -----------------------------------------


@pytest.mark.parametrize(("n", "k"), [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)])
def test_cuda_plan__act_order_past_m_4_is_the_plain_plan_on_a_permuted_x(n: int, k: int) -> None:
    from fusegraph.runtime.kernels.gptq_plan import cuda_plan

    for m in range(1, 66):
        plain = cuda_plan(m, n, k, 4, 132)
        act = cuda_plan(m, n, k, 4, 132, act_order=True)
        ring = (cuda_small_m_plan(m, n, k, 4, 132) or {}).get(
            "cpa"
        )  # the gather goes further on its ring's plan
        if m == 1 and (n // 64) * k <= (1 << 19 if ring else 1 << 18):  # the small-M kernel gathers x itself
            # past the first limit (on its ring), its words after the chain's wait (measured)
            early = {"early": 0} if (n // 64) * k > 1 << 18 else {}
            assert (
                act
                == {"kernel": "small"} | (cuda_small_m_plan(m, n, k, 4, 132, act_order=True) or {}) | early
            )
            assert "xperm" not in act
        else:  # the plain plan (None, i.e. Triton, where the plain path is Triton: o_proj past M=16, M > 64)
            # PDL after the permutation where it was measured faster: M ≤ 16, the mid-M kernel only to K = 8192
            pdl = m <= 16 and (k <= 8192 or not (plain or {}).get("mid"))
            assert act == (None if plain is None else plain | {"xperm": True, "xperm_pdl": pdl}), m
    # forced either way
    assert (cuda_plan(2, n, k, 4, 132, act_order=True, xperm=True) or {}).get("xperm") is True
    assert "xperm" not in (
        cuda_plan(16, n, k, 4, 132, act_order=True, xperm=False, forced=True) or {"xperm": 0}
    )


def test_cuda_plan__act_order_8_bit_and_bf16_follow_their_plain_plans() -> None:
    from fusegraph.runtime.kernels.gptq_plan import cuda_plan

    assert cuda_plan(16, 6144, 4096, 8, 132, act_order=True) == (cuda_plan(16, 6144, 4096, 8, 132) or {}) | {
        "xperm": True,
        "xperm_pdl": True,
    }
    # the gather, in the small-M kernel (o_proj; qkv's gathers are past the work limit)
    assert cuda_plan(1, 4096, 4096, 8, 132, act_order=True) == cuda_plan(1, 4096, 4096, 8, 132, mid=False)
    assert (cuda_plan(1, 6144, 4096, 8, 132, act_order=True) or {}).get("xperm") is True
    assert cuda_plan(16, 6144, 4096, 8, 132, act_order=True, bf16=True) is None  # bf16 at 8 bits: Triton
    plan = cuda_plan(32, 6144, 4096, 4, 132, act_order=True, bf16=True)
    assert plan is not None and plan["mid"] and plan["xperm"]


def test_cuda_plan__act_order_gathers_ahead_where_its_knobs_say(monkeypatch: pytest.MonkeyPatch) -> None:
    from fusegraph.runtime.kernels import gptq_plan
    from fusegraph.runtime.kernels.gptq_cuda_mid import MidSpec, mid_kernel_source

    monkeypatch.setattr(gptq_plan, "_CUDA_ACT_AHEAD", True)
    monkeypatch.setattr(gptq_plan, "_CUDA_ACT_GATHER_MAX_M", 16)
    monkeypatch.setattr(gptq_plan, "_CUDA_ACT_GATHER_MAX_WORK", 1 << 30)
    for m in (1, 4, 8, 16):  # the small-M kernel to M=8, the mid-M kernel past it, each with the gather ahead
        plan = gptq_plan.cuda_plan(m, 6144, 4096, 4, 132, act_order=True)
        plain = gptq_plan.cuda_plan(m, 6144, 4096, 4, 132, mid=False if m <= 8 else None)
        assert plan == (plain or {}) | {"perm_ahead": True}
    assert (gptq_plan.cuda_plan(17, 6144, 4096, 4, 132, act_order=True) or {}).get("xperm") is True
    assert (gptq_plan.cuda_plan(16, 6144, 4096, 4, 132, act_order=True, xperm=True) or {}).get(
        "xperm"
    ) is True
    assert "perm_ahead" not in (
        gptq_plan.cuda_plan(16, 6144, 4096, 4, 132, act_order=True, xperm=False) or {}
    )
    spec = MidSpec(4, False, 2, 4, 8, True, True, True, 2, perm_ahead=True)
    assert "#define PERM_AHEAD 1" in mid_kernel_source(spec) and "%(" not in mid_kernel_source(spec)
    with pytest.raises(ValueError, match="perm_ahead needs has_perm"):
        MidSpec(4, False, 2, 4, 8, True, False, True, 2, perm_ahead=True)
    small = KernelSpec(4, False, 1, 4, 2, True, True, True, 3, perm_ahead=True)
    assert "#define PERM_AHEAD 1" in kernel_source(small) and "gather_x<8 * MT>" in kernel_source(small)
    with pytest.raises(ValueError, match="perm_ahead needs has_perm"):
        KernelSpec(4, False, 1, 4, 2, True, False, True, 3, perm_ahead=True)


def test_cuda_plan__act_order_gathers_in_the_kernel_only_where_that_is_little_work() -> None:
    from fusegraph.runtime.kernels.gptq_plan import cuda_plan

    def route(m: int, n: int, k: int) -> str:
        plan = cuda_plan(m, n, k, 4, 132, act_order=True)
        return "triton" if plan is None else "xperm" if plan.get("xperm") else "gather"

    # as measured on the H200 (M=1, 4; chained, 9th and 10th sessions): the gather where it beat permuting x first
    # (qkv: on its one-CTA small-M plan with the cp.async ring)
    shapes = [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)]  # qkv, o_proj, gate_up, down
    assert [route(1, n, k) for n, k in shapes] == ["gather", "gather", "xperm", "xperm"]
    assert [route(4, n, k) for n, k in shapes] == [
        "xperm"
    ] * 4  # M=4: x permuted first (+ PDL) won everywhere
    assert [route(16, n, k) for n, k in shapes] == ["xperm"] * 4
    assert [route(64, n, k) for n, k in shapes] == ["xperm", "triton", "xperm", "xperm"]
    # the gather on qkv's ring keeps its words after the chain's wait (measured faster); o_proj's takes the chain's
    assert [(cuda_plan(1, n, k, 4, 132, act_order=True) or {}).get("early") for n, k in shapes[:2]] == [
        0,
        None,
    ]


# ---- the one routing place: which CUDA kernel (small, mid, wgmma, ws) or Triton --------------------------------


def test_cuda_plan__names_the_kernel_the_dispatcher_runs_for_every_m_and_asked_kernel() -> None:
    from fusegraph.runtime.kernels import gptq_cuda_wgmma as wg
    from fusegraph.runtime.kernels.gptq_plan import cuda_plan

    hopper = (9, 0)

    def kernel(m: int, n: int, k: int, **kw: object) -> str:
        plan = cuda_plan(m, n, k, 4, 132, **kw)  # type: ignore[arg-type]
        return "triton" if plan is None else str(plan["kernel"])

    for n, k in [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)]:  # qkv, o_proj, gate_up, down
        for m in (1, 8, 9, 16, 17, 64, 65, 100, 128, 129, 256):
            kind = wg.wgmma_takes_by_default(m, n, k, 4, torch.float16, hopper)
            plan = cuda_plan(m, n, k, 4, 132, cap=hopper)
            # the wgmma kernel exactly where its measured default range says, else what the plan says off sm_90
            assert (plan or {}).get("wgmma", False) == kind, (m, n, k, plan)
            assert kernel(m, n, k, cap=hopper) == ("wgmma" if kind else kernel(m, n, k)), (m, n, k)
            assert kernel(m, n, k, cap=hopper, configured=True) == kernel(m, n, k)  # config given: no default
    assert kernel(128, 28672, 4096, cap=hopper) == "wgmma"  # gate_up M=128 (measured 1.70x the Triton path)
    # act-order takes it too (x permuted once first) where that was measured faster
    act = {"cap": hopper, "act_order": True}
    assert [kernel(m, 4096, 4096, **act) for m in (64, 128, 256, 1024)] == ["wgmma"] * 4
    assert (
        kernel(8192, 4096, 4096, **act) == "triton"
    )  # M > N: the dequantize path (gptq_plan._act_order_wgmma)
    assert [kernel(m, 6144, 4096, **act) for m in (64, 256, 1024)] == ["wgmma"] * 3
    assert [kernel(m, 28672, 4096, **act) for m in (64, 256, 1024)] == ["wgmma"] * 3
    assert [kernel(m, 4096, 14336, **act) for m in (64, 256, 1024)] == ["wgmma"] * 3
    # from M = 17 on every Llama-3-8B shape, at 8 bits, in bf16 and with act-order too (gptq_cuda_wgmma._RSWG_DEFAULT,
    # _8BIT and _BF16, measured faster there); at M = 14..16 on o_proj (and qkv in fp16), plain only; else at M ≤ 16
    # the small- and mid-M kernels
    at_16 = {(6144, 4096): (True, False, False), (4096, 4096): (True, True, False)}  # (fp16, bf16, act-order)
    for n, k in [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)]:
        for kw in ({}, {"bf16": True}, {"act_order": True}):
            assert [kernel(m, n, k, cap=hopper, **kw) for m in (17, 24, 31)] == ["wgmma"] * 3, (n, k, kw)
            assert kernel(13, n, k, cap=hopper, **kw) != "wgmma", (n, k, kw)
        for kw, want in zip(
            ({}, {"bf16": True}, {"act_order": True}), at_16.get((n, k), (False,) * 3), strict=True
        ):
            got = [kernel(m, n, k, cap=hopper, **kw) for m in (14, 15, 16)]
            assert got == ["wgmma"] * 3 if want else "wgmma" not in got, (n, k, kw, got)
        # 8 bits from M = 9 (o_proj and gate_up faster, qkv and down within 6%: the layer gains)
        assert [str((cuda_plan(m, n, k, 8, 132, cap=hopper) or {}).get("kernel")) for m in (8, 9, 16, 64)] == [
            "mid", "wgmma", "wgmma", "wgmma"]  # fmt: skip
    assert kernel(256, 6144, 4096, cap=hopper, bf16=True) == "wgmma"
    assert [kernel(m, 4096, 4096) for m in (1, 8, 9, 64, 65)] == ["small"] * 3 + ["triton"] * 2
    # asked for by name: any M, any device (the kernels refuse what they cannot run, naming why)
    assert cuda_plan(1, 6144, 4096, 4, 132, wgmma=True) == {"kernel": "wgmma", "wgmma": True}
    assert kernel(64, 6144, 4096, wgmma=False, cap=hopper, configured=True) == "mid"


def test_cuda_small_plan__three_register_buffers_where_a_warp_has_at_most_two_blocks() -> None:
    """o_proj's one CTA of 8 warps an SM (2 blocks a warp) keeps all of a warp's words in flight at once (chained,
    9th session, 1.02-1.13x); not down's 7 blocks a warp (0.91x), not at 8 bits (0.93x)."""
    assert all((cuda_small_m_plan(m, 4096, 4096, 4, 132) or {}).get("bufs") == 3 for m in (1, 4, 9, 16))
    assert "bufs" not in (cuda_small_m_plan(1, 4096, 14336, 4, 132) or {"bufs": 0})
    assert "bufs" not in (cuda_small_m_plan(1, 4096, 4096, 8, 132) or {"bufs": 0})


def test_cuda_plans__a_cp_async_ring_where_registers_cannot_hold_the_words_in_flight() -> None:
    """The small-M kernel's one CTA of 8 warps an SM: a 2-stage ring to M = 8 for 4-bit down (7 blocks a warp) and
    8-bit o_proj (2 blocks of twice the words), and for 8-bit down at M = 1 only (H200, 15th session: 1.03x, M=2 0.99x,
    M=4 0.89x), not 4-bit o_proj (its 3 register buffers); the mid-M kernel's CTAs of 2 strips: a 3-stage ring, at 4
    bits from M=5 with the scale out of the loop at 4 CTAs an SM, at 8 bits from M=9 at 2 an SM (H200, 15th session,
    chained: 4-bit down M=16 1.11x the ring alone, M=8 1.23x without a ring; 8-bit down M 9..16 1.16x)."""
    from fusegraph.runtime.kernels.gptq_plan import cuda_mid_m_plan, cuda_plan

    assert all((cuda_small_m_plan(m, 4096, 14336, 4, 132) or {}).get("cpa") == 2 for m in (1, 4))  # M ≤ 4 fit
    assert all((cuda_small_m_plan(m, 4096, 4096, 8, 132) or {}).get("cpa") == 2 for m in (1, 4))
    assert "cpa" not in (cuda_small_m_plan(1, 4096, 4096, 4, 132) or {"cpa": 0})  # 3 buffers instead
    assert (cuda_small_m_plan(1, 4096, 14336, 8, 132) or {}).get("cpa") == 2
    assert all("cpa" not in (cuda_small_m_plan(m, 4096, 14336, 8, 132) or {"cpa": 0}) for m in (2, 4))
    assert "cpa" not in (cuda_small_m_plan(9, 4096, 14336, 4, 132, forced=True) or {"cpa": 0})
    assert "cpa" not in (
        cuda_small_m_plan(1, 28672, 4096, 4, 132) or {"cpa": 0}
    )  # 4 warps, not one CTA an SM
    for m in (5, 8, 9, 16):  # 4 bits: with the scale out of the loop, at 4 CTAs an SM
        down = cuda_plan(m, 4096, 14336, 4, 132)
        assert down is not None and down["kernel"] == "mid"
        assert (down["warps"], down["cpa"], down.get("sfold"), down["min_blocks"]) == (2, 3, True, 4)
    for m, k in ((9, 14336), (16, 14336), (16, 4096)):  # 8 bits past 8 rows (down, o_proj): at 2 CTAs an SM
        eight = cuda_mid_m_plan(m, 4096, k, 8, 132, forced=True)
        assert eight is not None and (eight["warps"], eight["cpa"], eight["min_blocks"]) == (2, 3, 2), (m, k)
    for m, n, k, bits in (
        (4, 4096, 14336, 4),
        (17, 4096, 14336, 4),
        (16, 6144, 4096, 4),
        (8, 4096, 14336, 8),
    ):
        assert "cpa" not in (cuda_mid_m_plan(m, n, k, bits, 132, forced=True) or {"cpa": 0}), (m, n, k, bits)
    act = cuda_plan(1, 4096, 14336, 4, 132, act_order=True)  # x permuted first, then the plain plan
    assert act is not None and act.get("xperm") and act.get("cpa") == 2
