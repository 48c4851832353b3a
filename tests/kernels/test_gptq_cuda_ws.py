"""The warp-specialized Hopper GPTQ kernel (`gptq_cuda_ws*.py`) against the math.

On a compute-capability-9.0 GPU (skipped elsewhere): M = 33..1024 (one or more row tiles of 64 or
128), fp16 and bf16, group sizes 128 and 256, column tiles 128 and 256, split-K 1..8 through a
cluster, act-order through the gathered x, an x view at an odd offset, eager and under CUDA-graph
replay (each replay writes into a poisoned output first). The reference is `gptq_packing.dequantize`
of the checkpoint tensors in float64, times x in float64. The plan, the generated source and the
refusals are checked on any machine.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fusegraph.ops.gptq_layout import repack
from fusegraph.ops.gptq_packing import dequantize, pack
from fusegraph.runtime.kernels.gptq_cuda_ws import gptq_ws_matmul, maybe_ws, ws_plan
from fusegraph.runtime.kernels.gptq_cuda_ws_src import (
    SMEM_LIMIT,
    WsSpec,
    ws_kernel_source,
    ws_smem_bytes,
)
from tests.kernels.gptq_cuda_cases import check_eager_and_replay

_HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)
hopper = pytest.mark.skipif(not _HOPPER, reason="needs a compute-capability-9.0 GPU (wgmma, sm_90a)")


def _layer(k: int, n: int, gs: int, desc_act: bool, seed: int, device: str) -> dict[str, Any]:
    """A seeded [k, n] asymmetric 4-bit GPTQ layer: "w" its float64 weight, "r" the repacked tensors."""
    gen = torch.Generator().manual_seed(seed)
    t = pack(torch.randn(n, k, generator=gen), bits=4, group_size=gs, sym=False, desc_act=desc_act)
    w = dequantize(t["qweight"], t["scales"], t["qzeros"], t["g_idx"], bits=4, group_size=gs, sym=False,
                   dtype=torch.float64)  # fmt: skip
    r = repack(t["qweight"], t["qzeros"], t["g_idx"] if desc_act else None, bits=4, group_size=gs, sym=False,
               desc_act=desc_act)  # fmt: skip
    return {"w": w, "r": {key: v.to(device) for key, v in r.items()}, "scales": t["scales"], "gen": gen}


def test_gptq_cuda_ws__plan_picks_tiles_and_split_by_waves() -> None:
    def tile(m: int, n: int, k: int) -> tuple[int, int, int, int] | None:
        p = ws_plan(m, n, k, 4, 132)
        return None if p is None else (p["bm"], p["bn"], p["split_k"], p["nprod"])

    assert tile(64, 28672, 4096) == (64, 256, 1, 2)  # 112 tiles: no split
    assert tile(64, 4096, 14336) == (64, 256, 4, 2)  # 16 tiles x 4 splits reach 45% of the SMs
    assert tile(1024, 28672, 4096) == (128, 256, 1, 1)  # 128 x 256: one producer warpgroup (registers)
    assert tile(256, 4096, 14336) == (128, 256, 4, 1)  # 32 tiles of 112 blocks: 90% of the SMs for long CTAs
    assert tile(512, 4096, 4096) == (128, 256, 2, 1)  # 64 tiles of 64 units: 2 splits
    assert tile(65, 384, 512) == (128, 128, 4, 2)  # 384 columns: only 128 divides
    assert tile(64, 192, 512) is None  # N not a multiple of 128
    assert tile(64, 256, 520) is None  # K not a multiple of 128
    assert ws_plan(64, 256, 512, 8, 132) is None  # 8-bit
    for m in (64, 128, 1024):
        plan = ws_plan(m, 6144, 4096, 4, 132)
        assert plan is not None and plan["ctas"] == 0
        spec = WsSpec(bf16=False, zero_v1=True, bm=plan["bm"], bn=plan["bn"], split=plan["split_k"],
                      stages=plan["stages"], rstages=plan["rstages"], nprod=plan["nprod"])  # fmt: skip
        assert ws_smem_bytes(spec) <= SMEM_LIMIT


def test_gptq_cuda_ws__source_has_the_wgmma_of_its_tile_and_the_register_split() -> None:
    src = ws_kernel_source(WsSpec(bf16=True, zero_v1=False, bm=128, bn=128, split=2))
    assert "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0," in src
    assert "%64, %65, 1, 1, 1, 0, 0;" in src  # 64 accumulators, then the A and B descriptors
    assert "setmaxnreg" not in src and "#define NPROD 1" in src
    assert "#define SPLIT 2" in src and "#define BM 128" in src
    with pytest.raises(ValueError, match="bn must be 128 or 256"):
        WsSpec(bf16=False, zero_v1=True, bn=64)
    with pytest.raises(ValueError, match="nprod=2 with bm=128, bn=256"):
        WsSpec(bf16=False, zero_v1=True, bm=128, bn=256, nprod=2)
    with pytest.raises(ValueError, match="shared memory"):
        WsSpec(bf16=False, zero_v1=True, bm=128, bn=256, stages=4, rstages=4)


def test_gptq_cuda_ws__refuses_what_it_cannot_run_naming_the_operand() -> None:
    lay = _layer(512, 256, 128, False, seed=1, device="cpu")
    r, sc = lay["r"], lay["scales"]
    x = torch.randn(64, 512).half()
    with pytest.raises(ValueError, match="bits=8"):
        gptq_ws_matmul(x, r["qweight"], sc, r["qzeros"], bits=8, group_size=128)
    with pytest.raises(
        ValueError, match=r"group_size must be a multiple of 128 dividing K=512 \(or -1\), got 64"
    ):
        gptq_ws_matmul(x, r["qweight"], sc, r["qzeros"], bits=4, group_size=64)
    with pytest.raises(ValueError, match=r"scales must be torch.float16 \[G, N\] = \[4, 256\]"):
        gptq_ws_matmul(x, r["qweight"], sc.float(), r["qzeros"], bits=4, group_size=128)
    with pytest.raises(
        ValueError, match=r"qweight_t must be int32 \[N/64, K/8, 64\] = \[4, 32, 64\] for K=256"
    ):
        gptq_ws_matmul(x[:, :256], r["qweight"], sc, r["qzeros"], bits=4, group_size=128)
    with pytest.raises(ValueError, match="x is torch.float32"):
        gptq_ws_matmul(x.float(), r["qweight"], sc.float(), r["qzeros"], bits=4, group_size=128)
    with pytest.raises(ValueError, match="not a CUDA tensor"):
        gptq_ws_matmul(x, r["qweight"], sc, r["qzeros"], bits=4, group_size=128)
    with pytest.raises(ValueError, match="the ws kernel cannot run: x is not a CUDA tensor"):
        maybe_ws(x, r["qweight"], sc, r["qzeros"], None, bits=4, group_size=128, zero_format="v1", config={},
                 sms=132)  # fmt: skip


# (m, k, n, dtype, group_size, plan override or {}, act-order)
CASES: list[tuple[int, int, int, torch.dtype, int, dict[str, int], bool]] = [
    (64, 512, 256, torch.float16, 128, {"bm": 64, "bn": 256, "split_k": 1, "nprod": 1}, False),
    (64, 512, 512, torch.float16, 128, {"bm": 64, "bn": 256, "split_k": 2, "nprod": 2}, False),
    (33, 1024, 256, torch.float16, 256, {"bm": 64, "bn": 128, "split_k": 4}, False),
    (65, 1024, 512, torch.float16, 128, {}, False),
    (128, 512, 256, torch.float16, 256, {"bm": 128, "bn": 128, "split_k": 2}, False),
    (200, 1024, 384, torch.float16, 128, {"bn": 128, "split_k": 8}, False),
    (256, 2048, 1024, torch.float16, 128, {"bm": 128, "bn": 256, "split_k": 1}, False),
    (255, 512, 512, torch.float16, 128, {"bm": 128, "bn": 128, "split_k": 1, "nprod": 1}, False),
    (256, 1024, 256, torch.float16, 128, {"bm": 64, "bn": 128, "split_k": 1}, False),
    (1024, 512, 512, torch.float16, 128, {}, False),
    (64, 4096, 512, torch.float16, 128, {"split_k": 8}, False),
    (100, 1024, 256, torch.bfloat16, 128, {"split_k": 2}, False),
    (130, 4096, 1024, torch.bfloat16, 256, {}, False),
    (96, 1024, 256, torch.float16, 128, {"split_k": 2}, True),
    (250, 1024, 512, torch.float16, 128, {"bm": 64, "bn": 128, "split_k": 1, "ctas": 3}, False),  # persistent
    (1000, 512, 512, torch.float16, 256, {"bm": 128, "bn": 256, "split_k": 1, "ctas": 5}, False),
]


@hopper
@pytest.mark.parametrize(
    "case",
    CASES,
    ids=[f"m{c[0]}_k{c[1]}_n{c[2]}_g{c[4]}_{str(c[3])[6:]}{'_act' if c[6] else ''}" for c in CASES],
)
def test_gptq_cuda_ws__matches_the_math_eager_and_in_a_cuda_graph(case: tuple[Any, ...]) -> None:
    m, k, n, dtype, gs, over, act = case
    lay = _layer(k, n, gs, act, seed=m * 7 + k + n, device="cuda")
    r, sc = lay["r"], lay["scales"].to(dtype).cuda()
    off = m % 3  # an odd offset: the kernel copies x to 16-byte alignment (off 0: a strided view)
    x = torch.randn(m, k + 8, generator=lay["gen"]).to(dtype).cuda()[:, off : off + k]
    ref = x.double().cpu() @ lay["w"]
    tol = 1e-2 if dtype == torch.bfloat16 else 3e-3
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    cfg = {"kernel": "cuda", "ws": True} | {
        {"bm": "block_m", "bn": "block_n"}.get(key, key): v for key, v in over.items()
    }
    check_eager_and_replay(
        lambda: maybe_ws(
            x,
            r["qweight"],
            sc,
            r["qzeros"],
            r.get("perm"),
            bits=4,
            group_size=gs,
            zero_format="v1",
            config=cfg,
            sms=sms,
        ),  # fmt: skip
        ref,
        tol,
        eager=2,
        replays=2,
    )


@hopper
def test_gptq_cuda_ws__the_dispatcher_runs_it_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from fusegraph.runtime.kernels import gptq_cuda_ws as ws
    from tests.kernels.gptq_cuda_cases import cuda_layer, rel_err, run_tiled

    calls: list[int] = []
    real = ws.gptq_ws_matmul

    def spy(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(x.shape[0])
        return real(x, *args, **kwargs)

    monkeypatch.setattr(ws, "gptq_ws_matmul", spy)
    layer = cuda_layer(512, 256, 4, False, torch.float16, seed=13)
    x = torch.randn(96, 512, generator=layer["gen"]).half().cuda()
    err = rel_err(run_tiled(layer, x, 4, {"kernel": "cuda", "ws": True}), x.double().cpu() @ layer["w"])
    assert err < 3e-3 and calls == [96], (err, calls)
