"""The Hopper wgmma GPTQ kernel (`gptq_cuda_wgmma*.py`: the warp-specialized RS-wgmma kernel) against the math.

On a compute-capability-9.0 GPU (skipped elsewhere): M = 32..1024 (up to 256 rows of x a pass), 4-bit fp16
and bf16 and 8-bit fp16, split-K through a cluster (its sum by remote loads or by row bands, "sred") and
stream-K, x by the copy engine (also multicast to two column tiles, "mc") and by cp.async, a programmatic
dependent launch ("pdl"), act-order through the gathered x, an x view at an odd offset, eager and under
CUDA-graph replay (each replay writes into a poisoned output first), and the default dispatch. The reference is
`gptq_packing.dequantize` of the checkpoint tensors in float64, times x in float64. The plan, the
kernel instance and the refusals are checked on any machine.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.kernels.gptq_cuda_cases import check_eager_and_replay, cuda_layer, rel_err, run_tiled

_HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)
hopper = pytest.mark.skipif(not _HOPPER, reason="needs a compute-capability-9.0 GPU (wgmma, sm_90a)")


@hopper
def test_gptq_cuda_wgmma__the_default_dispatch_runs_it_in_its_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fusegraph.runtime.kernels import gptq_cuda_wgmma as wg

    monkeypatch.setattr(wg, "_RSWG_DEFAULT", ((64, 256, 0, 1 << 30), (257, 1 << 20, 5000, 1 << 30)))
    calls: list[int] = []
    real = wg.gptq_rswg_matmul

    def spy(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(x.shape[0])
        return real(x, *args, **kwargs)

    monkeypatch.setattr(wg, "gptq_rswg_matmul", spy)
    for desc_act in (False, True):  # act-order: x permuted once, then the same kernel
        layer = cuda_layer(512, 256, 4, desc_act, torch.float16, seed=12)
        # 300: 32 strip-blocks < 5000; act-order at M = 200 ≤ N = 256 too (x permuted first,
        # gptq_plan._act_order_wgmma)
        for m, runs in [(64, True), (200, True), (300, False), (63, False)]:
            calls.clear()
            x = torch.randn(m, 512, generator=layer["gen"]).half().cuda()
            err = rel_err(run_tiled(layer, x, 4, None), x.double().cpu() @ layer["w"])
            assert err < 3e-3, f"M={m} act-order={desc_act}: relative error {err:.3g}"
            assert (m in calls) is runs, (
                f"M={m} act-order={desc_act}: the kernel ran: {m in calls}, expected {runs}"
            )


def test_gptq_cuda_wgmma__ws_plan_takes_m_up_to_256_in_one_pass_and_fills_the_sms() -> None:
    from fusegraph.runtime.kernels.gptq_cuda_wgmma_ws import rswg_plan, rswg_tok

    def rswg(m: int, n: int, k: int, bits: int = 4) -> dict[str, Any]:
        plan = rswg_plan(m, n, k, 132, bits)
        assert plan is not None
        return plan

    plan = {
        "split_k": 1,
        "tok": 256,
        "stages": 3,
        "ncw": 2,
        "minb": 1,
        "tma": 1,
        "sk": 0,
        "vred": 0,
        "pdl": 0,
        "ostage": 1,
    }
    assert rswg(256, 28672, 4096) == plan  # gate_up: 224 tiles, the outputs staged
    # o_proj and down at M = 256: 32 tiles of 256 rows; 64 of 128 rows split in 2 fill 128 SMs
    assert rswg(256, 4096, 4096) | rswg(256, 4096, 14336) == plan | {
        "tok": 128,
        "stages": 4,
        "split_k": 2,
        "vred": 1,
        "ostage": 0,
    }
    # qkv (96 strips) at M = 256 / 512: three strips a CTA, 128 CTAs (two strips: 96 CTAs of 256 rows)
    three = plan | {"ncw": 3, "tok": 128, "stages": 4}
    assert rswg(256, 6144, 4096) == three | {"split_k": 2, "vred": 1, "ostage": 0}
    assert rswg(512, 6144, 4096) == three
    assert rswg(512, 6144, 4096, bits=8) == three | {"stages": 3}  # 8 bits: 3 stages fit three strips
    assert rswg(512, 4096, 4096)["split_k"] == 2  # 64 tiles
    assert rswg(1024, 4096, 4096)["split_k"] == 1  # 128 tiles: one an SM
    # 192 tiles: 3 rounds of 16 blocks beat 2 of 32; they fill 97% of the rounds, as three strips would
    assert rswg(1024, 6144, 4096)["split_k"] == 2 and rswg(1024, 6144, 4096)["ncw"] == 2
    assert rswg(128, 6144, 4096)["ncw"] == 2  # 128 rows: the two-strip plan
    # qkv at 41..64 rows: one strip a CTA at split 2, 192 CTAs, two an SM, 4 stages
    two = {"split_k": 2, "tok": 64, "ncw": 1, "minb": 2, "stages": 4, "sk": 0, "vred": 1, "ostage": 0}
    assert rswg(64, 6144, 4096).items() >= two.items() and rswg(41, 6144, 4096)["ncw"] == 1
    assert rswg(40, 6144, 4096)["ncw"] == 2 and rswg(65, 6144, 4096)["ncw"] == 2  # outside the range
    assert rswg(64, 6144, 4096, bits=8)["ncw"] == 1 and rswg(64, 28672, 4096)["ncw"] == 2  # 896 CTAs: not
    assert rswg(32, 6144, 4096) | {"stages": 0} == plan | {
        "split_k": 4,
        "tok": 32,
        "stages": 0,
        "minb": 2,
        "vred": 1,
        "ostage": 0,
    }  # qkv at 32 rows: the two-strip plan, 192 CTAs, two an SM
    assert rswg(128, 28672, 4096)["ostage"] == 0  # staged outputs only past 128 rows
    # o_proj and down to 128 rows: one strip a CTA at split 2, 128 CTAs, one an SM, 6 stages (8 bits at 128 rows: 5)
    one = {"split_k": 2, "ncw": 1, "minb": 1, "stages": 6, "sk": 0, "vred": 1}
    for m, k in ((32, 4096), (64, 4096), (128, 4096), (64, 14336), (128, 14336)):
        assert rswg(m, 4096, k).items() >= one.items(), (m, k)
    assert rswg(64, 4096, 4096, bits=8).items() >= one.items() and rswg(256, 4096, 4096)["ncw"] == 2
    # but down to 32 rows (112 blocks): two strips a CTA, two an SM, split 7 (224 CTAs fill the SMs; a cluster of 8
    # was slower); o_proj's 32 blocks split in 2 would leave 64 CTAs: one strip stays
    fill = {"split_k": 7, "ncw": 2, "minb": 2, "stages": 4, "sk": 0, "vred": 1}
    for m in (17, 24, 32):
        for bits in (4, 8):
            assert rswg(m, 4096, 14336, bits).items() >= fill.items(), (m, bits)
        assert rswg(m, 4096, 4096).items() >= one.items(), m
    assert rswg(33, 4096, 14336).items() >= one.items()  # past 32 rows: one strip (M=48 a tie, M=64 slower)
    assert (
        rswg(128, 4096, 4096, bits=8)["stages"] == 5 and rswg(64, 4096, 640)["ncw"] == 2
    )  # 5 blocks: no split
    assert rswg(128, 6144, 4096)["ncw"] == 2 and rswg(64, 28672, 4096)["ncw"] == 2  # 192 / 896 one-strip CTAs
    assert rswg(256, 4096, 14336)["split_k"] == 2 and rswg(160, 4096, 14336)["ncw"] == 2  # past 128 rows
    assert rswg(512, 4096, 14336)["sk"] == 0  # 64 tiles
    assert rswg(64, 4096, 640)["split_k"] == 1  # 5 blocks only
    assert rswg(100, 192, 512)["ncw"] == 1  # 3 strips: one a CTA
    assert rswg_plan(8, 100, 512, 132) is None  # N not a multiple of 64
    assert rswg_plan(256, 4096, 4096, 132, 3) is None  # 4 or 8 bits
    eight = rswg_plan(256, 28672, 4096, 132, 8)
    assert eight is not None and eight["stages"] == 2 and rswg_plan(128, 28672, 4096, 132, 8)["stages"] == 4  # type: ignore[index]
    assert [rswg_tok(m) for m in (1, 64, 200, 256, 257, 520, 1024)] == [8, 64, 200, 256, 136, 176, 256]


def test_gptq_cuda_wgmma__ws_plan_weighs_192_rows_and_8_bits_2_stage_ring_by_rows() -> None:
    from fusegraph.runtime.kernels.gptq_cuda_wgmma_ws import rswg_plan

    def tok_split_stages(m: int, n: int, k: int, bits: int) -> tuple[int, int, int]:
        plan = rswg_plan(m, n, k, 132, bits)
        assert plan is not None
        return plan["tok"], plan["split_k"], plan["stages"]

    # M = 768: 4 tiles of 192 rows (128 CTAs of o_proj, down) beat 3 of 256 (96) and 6 of 128 (192), at 4 and 8 bits
    for bits in (4, 8):
        assert tok_split_stages(768, 4096, 4096, bits) == (192, 1, 3), bits
        assert tok_split_stages(768, 4096, 14336, bits) == (192, 1, 3), bits
        assert tok_split_stages(768, 28672, 4096, bits) == (192, 1, 3), bits
        assert tok_split_stages(768, 6144, 4096, bits) == (192, 2, 3), bits  # 384 CTAs: split 2
    # 8 bits at M = 512: 256 rows on a 2-stage ring (it costs 256 rows nothing, 128 rows 1.2x)
    assert tok_split_stages(512, 28672, 4096, 8) == (256, 1, 2)
    assert tok_split_stages(512, 4096, 14336, 8) == (256, 2, 2)
    assert tok_split_stages(512, 4096, 4096, 8) == (256, 2, 2)
    # 8-bit qkv at M = 256: three strips a CTA, 128 rows split 2 (128 CTAs) on 3 stages
    three = rswg_plan(256, 6144, 4096, 132, 8)
    assert three is not None
    assert (three["ncw"], three["tok"], three["split_k"], three["stages"]) == (3, 128, 2, 3)
    # qkv at M = 640: three strips of 160 rows (128 CTAs) beat two of 128 rows (240 CTAs, two rounds)
    for bits in (4, 8):
        plan = rswg_plan(640, 6144, 4096, 132, bits)
        assert plan is not None and (plan["ncw"], plan["tok"], plan["split_k"]) == (3, 160, 1), bits
    # M = 1024: 256 rows still (4 tiles fill the rounds; 6 of 176 do not)
    assert tok_split_stages(1024, 4096, 4096, 8) == (256, 1, 2)
    assert tok_split_stages(1024, 4096, 4096, 4)[0] == 256


def test_gptq_cuda_wgmma__the_default_takes_plain_4bit_fp16_on_sm90_in_its_ranges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fusegraph.runtime.kernels import gptq_cuda_wgmma as wg

    monkeypatch.setattr(wg, "_RSWG_DEFAULT", ((129, 1024, 3000, 1 << 30), (16, 16, 0, 2048)))
    monkeypatch.setattr(wg, "_RSWG_DEFAULT_8BIT", ((300, 1024, 0, 1 << 30),))
    monkeypatch.setattr(wg, "_RSWG_DEFAULT_BF16", ())
    fp16, hopper_cc = torch.float16, (9, 0)
    assert wg.wgmma_takes_by_default(256, 6144, 4096, 4, fp16, hopper_cc)  # 3072 strip-blocks
    assert not wg.wgmma_takes_by_default(256, 4096, 4096, 4, fp16, hopper_cc)  # 2048: too small
    assert not wg.wgmma_takes_by_default(128, 28672, 4096, 4, fp16, hopper_cc)  # M below the range
    assert not wg.wgmma_takes_by_default(1025, 28672, 4096, 4, fp16, hopper_cc)  # M above it
    assert wg.wgmma_takes_by_default(
        16, 4096, 4096, 4, fp16, hopper_cc
    )  # 2048 strip-blocks: at most the range's
    assert not wg.wgmma_takes_by_default(16, 6144, 4096, 4, fp16, hopper_cc)  # 3072: too many
    assert not wg.wgmma_takes_by_default(256, 6144, 4096, 8, fp16, hopper_cc)  # 8-bit: its own ranges
    assert wg.wgmma_takes_by_default(300, 6144, 4096, 8, fp16, hopper_cc)
    assert not wg.wgmma_takes_by_default(300, 6144, 4096, 8, torch.bfloat16, hopper_cc)  # no 8-bit bf16
    assert not wg.wgmma_takes_by_default(256, 6144, 4096, 4, torch.bfloat16, hopper_cc)  # not timed
    assert not wg.wgmma_takes_by_default(256, 6144, 4096, 4, fp16, (8, 0))  # no wgmma
    assert not wg.wgmma_takes_by_default(256, 6080, 4096, 4, fp16, hopper_cc)  # N % 128


def test_gptq_cuda_wgmma__ws_config_keys_reach_the_kernel_instance() -> None:
    from fusegraph.runtime.kernels.gptq_cuda_wgmma_ws import RSWG_KEYS, rswg_plan, rswg_spec

    plan = rswg_plan(256, 4096, 4096, 132)
    assert plan is not None and plan["tma"] == 1 and plan["split_k"] == 2
    for key, value in [
        ("vred", 1),
        ("sk", 1),
        ("tma", 0),
        ("stages", 2),
        ("probe", 3),
        ("pdl", 1),
        ("sred", 1),
        ("mc", 1),
        ("infl", 8),
        ("ostage", 1),
    ]:
        assert key in RSWG_KEYS
        over = plan | {key: value} | ({"split_k": 1} if key in ("sk", "mc", "ostage") else {})
        assert getattr(rswg_spec(over, bf16=False, zero_v1=True), key) == value
    with pytest.raises(ValueError, match="sk .stream-K. needs split=1, got 2"):
        rswg_spec(plan | {"sk": 1}, bf16=False, zero_v1=True)


def test_gptq_cuda_wgmma__a_config_overrides_the_plan_and_its_split_drops_the_staged_stores() -> None:
    from fusegraph.runtime.kernels.gptq_cuda_wgmma import with_config
    from fusegraph.runtime.kernels.gptq_cuda_wgmma_ws import rswg_plan, rswg_spec

    plan = rswg_plan(256, 28672, 4096, 132)
    assert plan is not None and plan["ostage"] == 1 and plan["split_k"] == 1
    for over in ({"split_k": 2}, {"sk": 1}, {"split_k": 4, "tok": 128, "stages": 4}):
        merged = with_config(plan, over | {"wgmma": True})
        assert merged["ostage"] == 0 and rswg_spec(merged, bf16=False, zero_v1=True).ostage is False
    assert with_config(plan, {"stages": 2})["ostage"] == 1  # split 1 still: staged
    with pytest.raises(
        ValueError, match="ostage .staged output stores. needs split=1 and no sk, got split=2"
    ):
        rswg_spec(with_config(plan, {"split_k": 2, "ostage": 1}), bf16=False, zero_v1=True)


def test_gptq_cuda_wgmma__ws_spec_refuses_bad_fields_and_shares_the_registers() -> None:
    from fusegraph.runtime.kernels.gptq_cuda_wgmma_ws_src import RswgSpec, rswg_kernel_source, rswg_smem_bytes

    with pytest.raises(ValueError, match="tok must be a multiple of 8 in 8..256, got 260"):
        RswgSpec(bf16=False, tok=260, split=1, zero_v1=True)
    with pytest.raises(
        ValueError, match="minb=2 with ncw=2 leaves 80 registers a thread: tok <= 64, got 128"
    ):
        RswgSpec(bf16=False, tok=128, split=1, zero_v1=True, minb=2)
    assert RswgSpec(bf16=False, tok=160, split=1, zero_v1=True, ncw=1, minb=2).compiled_regs() == 128
    three = RswgSpec(bf16=False, tok=128, split=2, zero_v1=True, ncw=3)  # 512 threads: 128 registers compiled
    assert three.compiled_regs() == 128 and three.regs() == (40, 152)
    assert "setmaxnreg.inc.sync.aligned.u32 152" in rswg_kernel_source(three)
    with pytest.raises(
        ValueError, match="minb=1 with ncw=3 leaves 128 registers a thread: tok <= 176, got 184"
    ):
        RswgSpec(bf16=False, tok=184, split=1, zero_v1=True, ncw=3)
    with pytest.raises(ValueError, match="ncw must be 1..3 and minb 1 or 2, got 4, 1"):
        RswgSpec(bf16=False, tok=64, split=1, zero_v1=True, ncw=4)
    with pytest.raises(ValueError, match="infl .steps in flight. must be 2, 4 or 8, got 3"):
        RswgSpec(bf16=False, tok=64, split=1, zero_v1=True, infl=3)
    deep = rswg_kernel_source(RswgSpec(bf16=False, tok=64, split=1, zero_v1=True, infl=8))
    assert "#define INFL 8" in deep and "u32 a[INFL][4];" in deep and "wg_wait<INFL - 1>();" in deep
    with pytest.raises(
        ValueError, match="ostage .staged output stores. needs split=1 and no sk, got split=2"
    ):
        RswgSpec(bf16=False, tok=64, split=2, zero_v1=True, ostage=True)
    staged = RswgSpec(bf16=False, tok=176, split=1, zero_v1=True, ncw=3, stages=2, ostage=True)
    assert rswg_smem_bytes(staged) == 256 + 1024 + 176 * (3 * 64 + 4) * 4  # the fp32 tile outgrows 2 stages
    assert "#define OSTAGE 1" in rswg_kernel_source(
        RswgSpec(bf16=False, tok=64, split=1, zero_v1=True, ostage=True)
    )
    with pytest.raises(ValueError, match="stages must be 2..8, got 1"):
        RswgSpec(bf16=False, tok=64, split=1, zero_v1=True, stages=1)
    with pytest.raises(ValueError, match="bits must be 4 or 8, got 3"):
        RswgSpec(bf16=False, tok=64, split=1, zero_v1=True, bits=3)
    with pytest.raises(ValueError, match="sred .the st.async split-K sum. needs split > 1 and no sk, got 1"):
        RswgSpec(bf16=False, tok=64, split=1, zero_v1=True, sred=True)
    with pytest.raises(
        ValueError, match="pdl must be 0..64 .0: off; P: L2 prefetch of P·stages blocks., got -1"
    ):
        RswgSpec(bf16=False, tok=64, split=1, zero_v1=True, pdl=-1)
    with pytest.raises(
        ValueError, match="mc .x multicast to a cluster of 2 column tiles. needs split=1, no sk and tma"
    ):
        RswgSpec(bf16=False, tok=64, split=2, zero_v1=True, tma=True, mc=True)
    with pytest.raises(ValueError, match="bits=8 needs fp16"):
        RswgSpec(bf16=True, tok=64, split=1, zero_v1=True, bits=8)
    eight = RswgSpec(bf16=False, tok=256, split=1, zero_v1=True, stages=2, bits=8, pdl=3)
    src8 = rswg_kernel_source(eight)
    assert "#define BITS 8" in src8 and "#define PDL 3" in src8 and "griddepcontrol.wait" in src8
    assert (
        rswg_smem_bytes(eight) == 256 + 1024 + 2 * 82944
    )  # (64 KB of x, 8 KB of words a strip) 1 KB aligned
    spec = RswgSpec(bf16=True, tok=200, split=4, zero_v1=False)
    assert spec.regs() == (40, 232) and RswgSpec(False, 64, 1, True, 4, 2, 2).regs() == (32, 104)
    assert RswgSpec(False, 64, 2, True, 4, 1, 2).regs() == (32, 224)  # 24 producer registers spilled
    src = rswg_kernel_source(spec)
    assert (
        "wgmma.mma_async.sync.aligned.m64n200k16.f32.bf16.bf16" in src
        and "__cluster_dims__(1, 1, SPLIT)" in src
    )
    assert "setmaxnreg.dec.sync.aligned.u32 40" in src and "#define STAGES 3" in src
    # the cluster's split-K sum: a release barrier before the remote loads, an execution-only one after the stores
    assert (
        src.index("  cluster_sync();\n  {")
        < src.index("ld.shared::cluster.v4.f32")
        < src.index("  cluster_exit();")
    )
    stage = (200 * 256 + 2 * (4096 + 256) + 1023) // 1024 * 1024  # 1024-byte aligned stages
    assert rswg_smem_bytes(spec) == 256 + 1024 + 3 * stage  # the ring holds the split-K sums


# (m, k, n, desc_act, dtype, config past {"kernel": "cuda", "wgmma": True})
WS_CASES = [
    (64, 512, 256, False, torch.float16, {}),  # the plan: x by the copy engine, two CTAs an SM
    (128, 1024, 512, False, torch.float16, {"split_k": 4}),
    (248, 512, 256, False, torch.bfloat16, {"split_k": 1}),  # rows past M read as zeros by the copy engine
    (72, 1024, 384, False, torch.float16, {"split_k": 3, "vred": 1}),
    (33, 512, 256, False, torch.float16, {"split_k": 1, "ncw": 1, "minb": 1, "stages": 2}),
    (1024, 512, 256, False, torch.float16, {}),
    (96, 1024, 192, True, torch.float16, {"split_k": 3, "stages": 3}),  # act-order; 8 blocks over 3: 2, 3, 3
    # stream-K: 4 tiles x 8 blocks over 3 CTAs; 3 row tiles (the last partial) x 2 x 4 over 5; 2 x 4 over 7
    (256, 1024, 512, False, torch.float16, {"split_k": 1, "sk": 1, "ctas": 3, "tma": 0}),
    (520, 512, 256, False, torch.bfloat16, {"split_k": 1, "sk": 1, "ctas": 5}),
    (64, 512, 256, False, torch.float16, {"split_k": 1, "sk": 1, "ctas": 7}),
    # x by 16-byte cp.asyncs
    (200, 512, 256, False, torch.bfloat16, {"split_k": 2, "tma": 0}),
    (256, 1024, 384, False, torch.float16, {"split_k": 1, "tma": 0}),
    (520, 1024, 256, False, torch.float16, {"split_k": 1, "stages": 2, "tma": 0}),
    (33, 512, 256, False, torch.float16, {"split_k": 2, "minb": 1, "stages": 2, "ncw": 1, "tma": 0}),
    # a programmatic dependent launch (the producer waits for the kernel before it, then reads x)
    (100, 1024, 256, False, torch.float16, {"pdl": 1, "split_k": 2}),
    (256, 1024, 512, False, torch.float16, {"pdl": 1, "split_k": 1, "sk": 1, "ctas": 5}),
    # the split-K sum by row bands (st.async): 3 CTAs, bands of 32 rows (the last: 8, past M zero)
    (72, 1024, 384, False, torch.float16, {"split_k": 3, "sred": 1}),
    (256, 1024, 256, False, torch.bfloat16, {"split_k": 2, "tok": 128, "stages": 4, "sred": 1}),
    # x multicast to a cluster of two column tiles (each loads half of x's block into both)
    (256, 1024, 512, False, torch.float16, {"split_k": 1, "tok": 256, "stages": 3, "mc": 1}),
    (300, 512, 1024, False, torch.bfloat16, {"split_k": 1, "mc": 1, "pdl": 1}),  # 2 row tiles, rows past M
    # three 64-column strips a CTA (512 threads)
    (256, 1024, 384, False, torch.float16, {"ncw": 3, "tok": 128, "split_k": 2, "stages": 4}),
    (96, 1024, 576, False, torch.bfloat16, {"ncw": 3, "split_k": 3}),
    (200, 512, 384, False, torch.float16, {"ncw": 3, "tok": 104, "split_k": 1, "tma": 0}),
    # 4 row tiles of 192; three strips of 176 rows (qkv's plan at M=704), rows past M in the last tile
    (700, 512, 384, False, torch.float16, {"ncw": 3, "tok": 176, "split_k": 1, "stages": 3, "ostage": 1}),
    (768, 1024, 512, False, torch.float16, {"tok": 192, "split_k": 2, "stages": 3, "vred": 1}),
    # 4 or 8 steps' wgmmas in flight (a stage freed INFL - 2 steps into the next block): a CTA of one block,
    # split-K in a cluster, stream-K, x multicast, bf16, 256 rows
    (64, 1024, 256, False, torch.float16, {"infl": 4}),
    (72, 512, 384, False, torch.float16, {"split_k": 3, "infl": 8}),
    (256, 1024, 512, False, torch.bfloat16, {"split_k": 1, "sk": 1, "ctas": 5, "infl": 8}),
    (300, 512, 1024, False, torch.float16, {"split_k": 1, "mc": 1, "infl": 4}),
    (1024, 1024, 256, False, torch.float16, {"infl": 8}),
    # the outputs through shared memory, stored a row at a time: rows past M, 1 and 3 strips, x multicast
    (64, 512, 256, False, torch.float16, {"split_k": 1, "ostage": 1}),
    (
        64,
        4096,
        1024,
        False,
        torch.float16,
        {"split_k": 1, "ostage": 1},
    ),  # 32 blocks a CTA (H200: wrong with fp16 staging)
    (248, 512, 256, False, torch.bfloat16, {"split_k": 1, "ostage": 1, "infl": 4}),
    (33, 512, 256, False, torch.float16, {"split_k": 1, "ncw": 1, "minb": 1, "stages": 2, "ostage": 1}),
    (200, 512, 384, False, torch.float16, {"ncw": 3, "tok": 104, "split_k": 1, "tma": 0, "ostage": 1}),
    (300, 512, 1024, False, torch.bfloat16, {"split_k": 1, "mc": 1, "ostage": 1}),
]
# 8-bit: the words twice the bytes, 32 word rows a block (m, k, n, desc_act, config)
WS8_CASES = [
    (32, 512, 256, False, {}),
    (64, 1024, 256, False, {"split_k": 3}),  # two CTAs an SM (the plan), blocks 2, 3, 3 in a cluster
    (256, 512, 384, False, {}),  # the plan: 2 stages at 256 rows
    (1024, 512, 256, True, {"tok": 128, "stages": 4, "split_k": 2}),  # act-order, 8 row tiles
    (300, 1024, 256, False, {"split_k": 1, "sk": 1, "ctas": 7, "tma": 0}),  # stream-K, x by cp.async
    (72, 512, 192, False, {"ncw": 1, "pdl": 4}),
    (200, 1024, 256, False, {"split_k": 4, "sred": 1}),
    (520, 1024, 512, False, {"split_k": 1, "tok": 128, "stages": 4, "mc": 1}),
    (256, 512, 384, False, {"ncw": 3, "tok": 128, "split_k": 1, "stages": 3}),
    # qkv's plan at M=256; M=768's (4 row tiles of 192); 176 rows with rows past M in the last tile
    (256, 1024, 384, False, {"ncw": 3, "tok": 128, "split_k": 2, "stages": 3, "vred": 1}),
    (768, 1024, 256, False, {"tok": 192, "split_k": 1, "stages": 3, "ostage": 1}),
    (640, 1024, 384, False, {"ncw": 3, "tok": 160, "split_k": 1, "stages": 3, "ostage": 1}),  # qkv's at M=640
    (700, 1024, 256, False, {"tok": 176, "split_k": 2, "stages": 3, "vred": 1}),
    (64, 1024, 256, False, {"split_k": 3, "infl": 4}),
    (256, 1024, 384, True, {"infl": 8}),
    (200, 512, 256, False, {"split_k": 1, "ostage": 1}),
    (
        64,
        4096,
        2048,
        False,
        {"split_k": 1, "ostage": 1},
    ),  # 32 blocks a CTA: the staged tile after a long ring
]


@hopper
@pytest.mark.parametrize(
    "case", WS_CASES, ids=[f"ws_m{c[0]}_k{c[1]}_n{c[2]}_{str(c[4])[6:]}_{'_'.join(c[5])}" for c in WS_CASES]
)
def test_gptq_cuda_wgmma__ws_matches_the_math_eager_and_in_a_cuda_graph(case: tuple[Any, ...]) -> None:
    m, k, n, desc_act, dtype, extra = case
    layer = cuda_layer(k, n, 4, desc_act, dtype, seed=m * 7 + k)
    off = m % 3  # an odd offset: the dispatcher copies x to 16-byte alignment first
    x = torch.randn(m, k + 8, generator=layer["gen"]).to(dtype).cuda()[:, off : off + k]
    ref = x.double().cpu() @ layer["w"]
    tol = 2e-2 if dtype == torch.bfloat16 else 3e-3
    cfg: dict[str, Any] = {"kernel": "cuda", "wgmma": True} | extra
    check_eager_and_replay(lambda: run_tiled(layer, x, 4, cfg), ref, tol, eager=1, replays=2)


@hopper
@pytest.mark.parametrize(
    "case", WS8_CASES, ids=[f"ws8_m{c[0]}_k{c[1]}_n{c[2]}_{'_'.join(c[4])}" for c in WS8_CASES]
)
def test_gptq_cuda_wgmma__ws_8bit_matches_the_math_eager_and_in_a_cuda_graph(case: tuple[Any, ...]) -> None:
    m, k, n, desc_act, extra = case
    layer = cuda_layer(k, n, 8, desc_act, torch.float16, seed=m * 5 + k)
    x = torch.randn(m, k, generator=layer["gen"]).half().cuda()
    ref = x.double().cpu() @ layer["w"]
    cfg: dict[str, Any] = {"kernel": "cuda", "wgmma": True} | extra
    check_eager_and_replay(lambda: run_tiled(layer, x, 8, cfg), ref, 3e-3, eager=1, replays=2)


def test_gptq_cuda_wgmma__ws_refuses_bad_operands_and_plan_fields_naming_them() -> None:
    from fusegraph.runtime.kernels.gptq_cuda_wgmma import maybe_wgmma
    from fusegraph.runtime.kernels.gptq_cuda_wgmma_ws import gptq_rswg_matmul, row_stride, rswg_plan

    x = torch.zeros(4, 256, dtype=torch.float16)
    qw, qz = torch.zeros(4, 32, 64, dtype=torch.int32), torch.zeros(2, 32, dtype=torch.int32)
    scales = torch.zeros(2, 256, dtype=torch.float16)
    plan = rswg_plan(4, 256, 256, 132)
    assert plan is not None

    def run(x_: torch.Tensor, **over: int) -> None:
        gptq_rswg_matmul(x_, qw, scales, qz, group_size=128, zero_format="v1", plan=plan | over)

    with pytest.raises(ValueError, match=r"gptq_rswg_matmul: split_k must be 1..2 \(8 and K/128\), got 3"):
        run(x, split_k=3)
    with pytest.raises(
        ValueError, match=r"scales/qzeros rows must be 16-byte aligned \(N a multiple of 64\)"
    ):
        gptq_rswg_matmul(x, qw, torch.zeros(2, 260, dtype=torch.float16)[:, :256], qz, group_size=128,
                         zero_format="v1", plan=plan)  # fmt: skip
    # one group (-1): torch keeps stride 1 for a single row (the repacked qzeros), which the row check once read,
    # refusing every per-channel checkpoint; a single row's length stands in (no block reads past row 0)
    one = torch.zeros(32, 1, dtype=torch.int32).t()
    assert one.stride(0) == 1 and row_stride(one) == 32 and row_stride(qz) == 32
    with pytest.raises(ValueError, match="gptq_rswg_matmul: ncw must be 1..3 with N=256"):
        run(x, ncw=3)
    with pytest.raises(
        ValueError, match="gptq_rswg_matmul: mc needs an even number of column tiles, N=384 has 3"
    ):
        gptq_rswg_matmul(x, torch.zeros(6, 32, 64, dtype=torch.int32), torch.zeros(2, 384, dtype=torch.float16),
                         torch.zeros(2, 48, dtype=torch.int32), group_size=128, zero_format="v1",
                         plan=plan | {"split_k": 1, "ncw": 2, "mc": 1})  # fmt: skip
    with pytest.raises(ValueError, match="gptq_rswg_matmul: x torch.float32 / scales torch.float16"):
        run(x.float())
    with pytest.raises(ValueError, match="the wgmma kernel cannot run: not a CUDA tensor"):
        maybe_wgmma(x, qw, scales, qz, None, bits=4, group_size=128, zero_format="v1", config={"wgmma": True},
                    sms=132)  # fmt: skip
    with pytest.raises(ValueError, match="config 'wgmma' must be True .or left out., got 'ws'"):
        maybe_wgmma(x, qw, scales, qz, None, bits=4, group_size=128, zero_format="v1", config={"wgmma": "ws"},
                    sms=132)  # fmt: skip
    with pytest.raises(ValueError, match="the wgmma kernel cannot run: bits=3: it takes 4 or 8 bits"):
        maybe_wgmma(x, qw, scales, qz, None, bits=3, group_size=128, zero_format="v1", config={"wgmma": True},
                    sms=132)  # fmt: skip
    with pytest.raises(ValueError, match="gptq_rswg_matmul: bits must be 4 or 8, got 2"):
        gptq_rswg_matmul(x, qw, scales, qz, group_size=128, zero_format="v1", plan=plan, bits=2)
    with pytest.raises(ValueError, match="gptq_rswg_matmul: bits=8 needs fp16 x, got torch.bfloat16"):
        gptq_rswg_matmul(x.bfloat16(), qw, scales.bfloat16(), qz, group_size=128, zero_format="v1", plan=plan,
                         bits=8)  # fmt: skip
