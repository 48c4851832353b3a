"""The Hopper wgmma GPTQ kernel's front: when it runs and how `gptq_cuda.maybe_gptq_cuda` calls it.

The kernel itself is the warp-specialized RS-wgmma one of `gptq_cuda_wgmma_ws.py` (plan, NVRTC build
for sm_90a, launch) and `gptq_cuda_wgmma_ws_src.py` (its source): plain 4-bit x `[M, K]` fp16/bf16 or 8-bit fp16
on a compute-capability-9.0 GPU. A config with {"wgmma": True} asks for it (its plan's keys,
`gptq_cuda_wgmma_ws.RSWG_KEYS`, override the plan); `wgmma_takes_by_default` says where the default
dispatch (`gptq_plan.cuda_plan`) runs it: 4-bit fp16 or bf16 from M = 17 up (from 14 on small shapes: o_proj, and qkv in
fp16), 8-bit fp16 from M = 9 (measured faster there).
(A first, single-warpgroup wgmma kernel lost to it at every measured cell and was removed; its code
is in the history at 8d3255a, `gptq_cuda_wgmma_src.py`.)
"""

from __future__ import annotations

from typing import Any

import torch

from fusegraph.runtime.kernels.gptq_cuda_wgmma_ws import RSWG_KEYS, gptq_rswg_matmul, rswg_plan

__all__ = ["maybe_wgmma", "wgmma_takes_by_default", "wgmma_unsupported"]


def wgmma_unsupported(x: torch.Tensor, bits: int) -> str | None:
    """Why the wgmma kernel cannot take these operands, or None (act-order runs on x gathered first)."""
    if bits not in (4, 8):
        return f"bits={bits}: it takes 4 or 8 bits"
    if bits == 8 and x.dtype != torch.float16:
        return f"bits=8 with {x.dtype}: 8 bits need fp16"
    if x.device.type != "cuda":
        return "not a CUDA tensor"
    cap = torch.cuda.get_device_capability(x.device)
    if cap != (9, 0):
        return f"compute capability {cap}: wgmma needs sm_90a (9.0)"
    return None


def with_config(plan: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """`plan` with the `RSWG_KEYS` that `config` sets. A config's split-K or stream-K drops the plan's staged output
    stores ("ostage", split 1 only) unless the config sets "ostage" itself (then the spec refuses a bad pair).

    Example:
        >>> with_config({"split_k": 1, "sk": 0, "ostage": 1}, {"split_k": 2, "wgmma": True})
        {'split_k': 2, 'sk': 0, 'ostage': 0}
    """
    out = plan | {key: int(config[key]) for key in RSWG_KEYS if key in config}
    if "ostage" not in config and (out["split_k"] != 1 or out.get("sk")):
        out["ostage"] = 0
    return out


def maybe_wgmma(
    x: torch.Tensor,
    qweight_t: torch.Tensor,
    scales: torch.Tensor,
    qzeros_t: torch.Tensor,
    perm: torch.Tensor | None,
    *,
    bits: int,
    group_size: int,
    zero_format: str,
    config: dict[str, Any],
    sms: int,
) -> torch.Tensor:
    """`x @ W` with the wgmma kernel, as `gptq_cuda.maybe_gptq_cuda` calls it for a config or plan with
    "wgmma": True; the keys of `RSWG_KEYS` in `config` ("split_k", "tok", "stages", "ncw", "minb", ...)
    override its plan's.

    Act-order runs on x's columns gathered once through perm (the repacked rows are sorted). Raises
    ValueError naming the reason when the kernel cannot run or the config is wrong.

    Example:
        >>> y = maybe_wgmma(x, t["qweight"], scales, t["qzeros"], None, bits=4, group_size=128,
        ...                 zero_format="v1", config={"wgmma": True}, sms=132)
    """
    if config.get("wgmma") is not True:
        raise ValueError(
            f"gptq_tiled_matmul: config 'wgmma' must be True (or left out), got {config.get('wgmma')!r}"
        )
    m, k = x.shape
    n = qweight_t.shape[0] * 64
    why = wgmma_unsupported(x, bits)
    plan = rswg_plan(m, n, k, sms, bits) if why is None else None
    if plan is None:
        raise ValueError(
            f"gptq_tiled_matmul: the wgmma kernel cannot run: {why or f'no plan for M={m} N={n} K={k}'}"
        )
    if perm is not None:
        x = x.index_select(1, perm)  # act-order: the kernel runs on the row-sorted weight
    plan = with_config(plan, config)
    return gptq_rswg_matmul(x, qweight_t, scales, qzeros_t, group_size=group_size, zero_format=zero_format,
                            plan=plan, bits=bits)  # fmt: skip


# The default dispatch's use of the kernel: plain 4-bit fp16 on sm_90 with M in one of these ranges (lo, hi) on
# shapes of lo_work..hi_work strip-blocks (N/64 · K/128); an empty tuple: never. Set from the H200 benchmark
# (benchmarks/gpu_gptq_wgmma.py, docs/benchmarks.md, run D): with x by the copy engine it beat the dispatch without
# it on all four Llama-3-8B shapes at M = 32..512 (1.02-3.1x, o_proj M=256 1.02x) and at 1024 on three (1.11-1.31x;
# qkv 0.99x, a tie). From M = 17 (sixteenth session, `gptq_plan_sweep.py` with its peers, chained, µs): M=17 o_proj
# 7.20 against Triton's 17.0, qkv 9.20 against the mid-M kernel's 11.05, gate_up 29.2 against 33.1, down 19.9
# against 21.8; at M = 20..31 1.1-1.9x the same way on all four. At M ≤ 16 the small- and mid-M kernels stay: M=16
# o_proj 6.94 against 7.23 and qkv 8.77 against 8.94 (within 4%), gate_up 27.9 against 25.8, down 19.0 against 16.6.
# At M = 14..16 on shapes of at most 3072 strip-blocks (o_proj 2048, qkv 3072) it takes them after all (twenty-fourth
# session, chained as the runtime launches it, 3 rounds, µs, the small- and mid-M kernels / this kernel): o_proj M=16
# 7.21-7.34 / 6.96-7.04, M=14 7.12-7.16 / 6.98-7.10; qkv M=16 8.98-9.06 / 8.82-8.94, M=14 8.81-8.99 / 8.82-8.94 (a tie);
# not below (o_proj M=9..12 0.97-1.00x, qkv 0.95-0.98x) nor on gate_up and down (0.88-0.97x at M = 9..16).
_RSWG_DEFAULT: tuple[tuple[int, int, int, int], ...] = ((14, 16, 0, 3072), (17, 1 << 20, 0, 1 << 30))
# The same for 8-bit fp16 and for 4-bit bf16 (ranges as above). Fifth session: 8-bit beat the dispatch without it on
# all four shapes at M = 32..1024 (1.08-2.64x); bf16 at M = 64, 256 and 1024 on all four and M = 32 on three
# (1.02-1.94x). Sixteenth: from M = 17 on all four, 8-bit M=17..28 1.6-2.1x (o_proj M=17 8.5 against 17.8 µs; down
# M=28 23.1 against 40.2), bf16 M=17..24 1.2-2.3x (qkv M=24 9.7 against 12.0). 8-bit from M = 9, against the mid-M
# kernel (M = 9, 12, 16): o_proj 8.3-8.6 against 10.9-11.3 µs, gate_up 33.5-34.0 against 35.9-37.9, but qkv 12.05-12.07
# against 11.34-11.72 and down 21.55-21.70 against 21.44-21.47: a layer's four gain about 4.5 µs of 80. bf16 at M = 14..16
# on o_proj (twenty-fourth session, as above: M=16 7.38-7.47 / 7.22-7.31, M=14 7.31-7.35 / 7.24-7.33), not qkv (0.94x).
_RSWG_DEFAULT_8BIT: tuple[tuple[int, int, int, int], ...] = ((9, 1 << 20, 0, 1 << 30),)
_RSWG_DEFAULT_BF16: tuple[tuple[int, int, int, int], ...] = ((14, 16, 0, 2048), (17, 1 << 20, 0, 1 << 30))


def wgmma_takes_by_default(m: int, n: int, k: int, bits: int, dtype: torch.dtype,
                           cap: tuple[int, int]) -> bool:  # fmt: skip
    """Whether the default dispatch (no config) runs the wgmma kernel for this call (`gptq_plan.cuda_plan`
    asks): on sm_90, N and K multiples of 128, M in one of the ranges of `_RSWG_DEFAULT` (4-bit fp16),
    `_RSWG_DEFAULT_8BIT` (8-bit fp16) or `_RSWG_DEFAULT_BF16` (4-bit bf16) (act-order:
    `gptq_plan.cuda_plan` also weighs the permutation of x that must come first).

    Example:
        >>> wgmma_takes_by_default(128, 28672, 4096, 4, torch.float16, (9, 0))
        True
        >>> wgmma_takes_by_default(128, 28672, 4096, 8, torch.bfloat16, (9, 0))  # 8-bit needs fp16
        False
        >>> [wgmma_takes_by_default(16, n, 4096, 4, torch.float16, (9, 0)) for n in (4096, 28672)]  # o_proj, gate_up
        [True, False]
    """
    if cap != (9, 0) or n % 128 or k % 128:
        return False
    ranges = {(4, torch.float16): _RSWG_DEFAULT, (8, torch.float16): _RSWG_DEFAULT_8BIT,
              (4, torch.bfloat16): _RSWG_DEFAULT_BF16}.get((bits, dtype), ())  # fmt: skip
    work = (n // 64) * (k // 128)
    return any(lo <= m <= hi and lo_work <= work <= hi_work for lo, hi, lo_work, hi_work in ranges)
