"""The Hopper wgmma GPTQ kernel (`gptq_cuda_wgmma_src.py`) on the layout of `fg.gptq.repack`: plan and launch.

For plain 4-bit (no act-order) x `[M, K]` fp16/bf16 on a compute-capability-9.0 GPU: each CTA is one
warpgroup over four 64-column strips, a K slice and a chunk of ≤ 64 rows of x (rows past 64 take
more chunks, each reading the weights again). Compiled by NVRTC (`torch.cuda._compile_kernel`)
for sm_90a, once per (device, `WgmmaSpec`) in a process. `gptq_cuda.maybe_gptq_cuda` runs it
when the config says {"kernel": "cuda", "wgmma": True} (optionally "split_k"). {"wgmma": "ws"} runs the
warp-specialized kernel of `gptq_cuda_wgmma_ws.py` instead (M up to 256 a pass, x by the copy engine).
`wgmma_default_kind` says which of the two (if any) the default dispatch (`gptq_plan.cuda_plan`) runs:
the warp-specialized one in `_RSWG_DEFAULT`'s ranges (plain 4-bit fp16 from M = 32: measured faster),
else this one where `wgmma_takes_by_default` says so (M 65..128 of large shapes, inside those ranges now).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from fusegraph.runtime.kernels.gptq_cuda_wgmma_src import (
    WGMMA_KERNEL_NAME,
    WgmmaSpec,
    wgmma_kernel_source,
    wgmma_smem_bytes,
)
from fusegraph.runtime.kernels.gptq_cuda_wgmma_ws import RSWG_KEYS, gptq_rswg_matmul, rswg_plan

__all__ = [
    "gptq_wgmma_matmul",
    "maybe_wgmma",
    "wgmma_plan",
    "wgmma_default_kind",
    "wgmma_takes_by_default",
    "wgmma_unsupported",
]

_log = logging.getLogger(__name__)
_KERNELS: dict[tuple[int, WgmmaSpec], Any] = {}
_FAILED: dict[tuple[int, WgmmaSpec], str] = {}
_SMEM_SET: dict[tuple[int, WgmmaSpec], int] = {}
TOK = 64  # rows of x a CTA takes at most (the wgmma's N ≤ 64: its 4·16 accumulators a column group fit)


def wgmma_plan(m: int, n: int, k: int, sms: int) -> dict[str, Any] | None:
    """{"split_k": s} for the wgmma kernel on x `[m, k]` · W `[k, n]`, or None when it cannot take the shape.

    s is the smallest divisor of K/128 (≤ 8, a cluster) whose CTAs (N/256 · ⌈M/64⌉ · s) fill the
    `sms` SMs, else the largest such divisor.

    Example:
        >>> wgmma_plan(64, 6144, 4096, 132)
        {'split_k': 8}
    """
    if m < 1 or n % 256 or k % 128:
        return None
    tiles = (n // 256) * ((m + TOK - 1) // TOK)
    splits = [s for s in range(1, 9) if (k // 128) % s == 0]
    for s in splits:
        if tiles * s >= sms:
            return {"split_k": s}
    return {"split_k": splits[-1]}


def wgmma_unsupported(x: torch.Tensor, n: int, bits: int, perm: torch.Tensor | None) -> str | None:
    """Why the wgmma kernel cannot take these operands, or None."""
    if x.device.type != "cuda":
        return "not a CUDA tensor"
    if bits != 4 or perm is not None:
        return f"bits={bits}, act-order={perm is not None}: it takes plain 4-bit only"
    cap = torch.cuda.get_device_capability(x.device)
    if cap != (9, 0):
        return f"compute capability {cap}: wgmma needs sm_90a (9.0)"
    if n % 256:
        return f"N={n} is not a multiple of 256 (4 strips of 64 a CTA)"
    return None


def _kernel(spec: WgmmaSpec, device: torch.device, smem: int) -> Any:
    """The compiled kernel of `spec` on `device` (compiled once); raises RuntimeError if NVRTC fails."""
    key = (device.index or 0, spec)
    if key in _FAILED:
        raise RuntimeError(f"gptq_cuda_wgmma: {spec} did not compile: {_FAILED[key]}")
    kern = _KERNELS.get(key)
    if kern is None:
        if torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                f"gptq_cuda_wgmma: {spec} is not compiled; run it once before CUDA-graph capture"
            )
        try:
            with torch.cuda.device(device):
                kern = torch.cuda._compile_kernel(
                    wgmma_kernel_source(spec), WGMMA_KERNEL_NAME, compute_capability="90a"
                )
        except Exception as err:  # noqa: BLE001 - no NVRTC, an old one without sm_90a, a compile error
            _FAILED[key] = f"{type(err).__name__}: {str(err)[:300]}"
            _log.warning("gptq_cuda_wgmma: %s did not compile: %s", spec, _FAILED[key])
            raise RuntimeError(f"gptq_cuda_wgmma: {spec} did not compile: {_FAILED[key]}") from err
        _KERNELS[key] = kern
    if smem > _SMEM_SET.get(key, 48 * 1024 - 1):
        if hasattr(kern, "set_shared_memory_config"):
            kern.set_shared_memory_config(smem)
        else:
            from torch.cuda._utils import _check_cuda, _get_gpu_runtime_library

            _check_cuda(_get_gpu_runtime_library().cuFuncSetAttribute(kern.func, 8, smem))  # max dynamic smem
        _SMEM_SET[key] = smem
    return kern


def gptq_wgmma_matmul(
    x: torch.Tensor,
    qweight_t: torch.Tensor,
    scales: torch.Tensor,
    qzeros_t: torch.Tensor,
    *,
    group_size: int,
    zero_format: str,
    split_k: int,
) -> torch.Tensor:
    """`x @ W` for plain 4-bit repacked GPTQ tensors with the wgmma kernel (see the module docstring).

    Operands as in `gptq_tiled_matmul` (already checked there: contiguous, K % 128 == 0, group_size a
    multiple of 128 dividing K); x 16-byte aligned with a row stride that is a multiple of 8.

    Example:
        >>> y = gptq_wgmma_matmul(x, t["qweight"], scales, t["qzeros"], group_size=128, zero_format="v1",
        ...                       split_k=4)
    """
    m, k = x.shape
    n = qweight_t.shape[0] * 64
    why = wgmma_unsupported(x, n, 4, None)
    if why is not None:
        raise ValueError(f"gptq_wgmma_matmul: {why}")
    if x.dtype not in (torch.float16, torch.bfloat16) or scales.dtype != x.dtype:
        raise ValueError(
            f"gptq_wgmma_matmul: x {x.dtype} / scales {scales.dtype}: needs fp16 or bf16, both alike"
        )
    blocks = k // 128
    if not 1 <= split_k <= 8 or blocks % split_k:
        raise ValueError(
            f"gptq_wgmma_matmul: split_k must be 1..8 and divide K/128 = {blocks}, got {split_k}"
        )
    if x.data_ptr() % 16 or x.stride(0) % 8 or x.stride(1) != 1:
        raise ValueError(
            "gptq_wgmma_matmul: x must be 16-byte aligned with a row stride that is a multiple of 8"
        )
    spec = WgmmaSpec(bf16=x.dtype == torch.bfloat16, mt=(min(m, TOK) + 7) // 8, split=split_k,
                     zero_v1=zero_format == "v1")  # fmt: skip
    smem = wgmma_smem_bytes(spec)
    kern = _kernel(spec, x.device, smem)
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    kern(
        grid=(n // 256, split_k, (m + TOK - 1) // TOK), block=(128, 1, 1), shared_mem=smem,
        args=[x, qweight_t, scales, qzeros_t, out, m, n, k, k if group_size == -1 else group_size, blocks // split_k,
              x.stride(0), scales.stride(0), qzeros_t.stride(0), out.stride(0)],
    )  # fmt: skip
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
    """`x @ W` with the wgmma kernel, as `gptq_cuda.maybe_gptq_cuda` calls it for a config with "wgmma": True
    (the single-warpgroup kernel) or "wgmma": "ws" (the warp-specialized one; "tok", "stages", "ncw" and "minb"
    in `config` override its plan's).

    Act-order runs on x's columns gathered once through perm (the repacked rows are sorted). "split_k"
    in `config` overrides the plan's. Raises ValueError naming the reason when the kernel cannot run.

    Example:
        >>> y = maybe_wgmma(x, t["qweight"], scales, t["qzeros"], None, bits=4, group_size=128,
        ...                 zero_format="v1", config={"wgmma": True}, sms=132)
    """
    m, k = x.shape
    n = qweight_t.shape[0] * 64
    if config.get("wgmma") == "ws":  # the warp-specialized kernel (gptq_cuda_wgmma_ws.py)
        why = wgmma_unsupported(x, 256, bits, None)
        ws = rswg_plan(m, n, k, sms) if why is None else None
        if ws is None:
            raise ValueError(
                f"gptq_tiled_matmul: the wgmma kernel cannot run: {why or f'no plan for M={m} N={n} K={k}'}"
            )
        if perm is not None:
            x = x.index_select(1, perm)
        ws |= {key: int(config[key]) for key in RSWG_KEYS if key in config}
        return gptq_rswg_matmul(x, qweight_t, scales, qzeros_t, group_size=group_size, zero_format=zero_format,
                                plan=ws)  # fmt: skip
    why = wgmma_unsupported(x, n, bits, None)
    plan = wgmma_plan(m, n, k, sms) if why is None else None
    if plan is None:
        raise ValueError(
            f"gptq_tiled_matmul: the wgmma kernel cannot run: {why or f'no plan for M={m} N={n} K={k}'}"
        )
    if perm is not None:
        x = x.index_select(1, perm)  # act-order: the kernel runs on the row-sorted weight
    split = int(config.get("split_k", plan["split_k"]))
    return gptq_wgmma_matmul(x, qweight_t, scales, qzeros_t, group_size=group_size, zero_format=zero_format,
                             split_k=split)  # fmt: skip


# The default dispatch's use of the kernel (plain 4-bit fp16 on sm_90): M in this range (None: never)
# and at least this many strip-blocks (N/64 · K/128). From the H200 benchmark (benchmarks/gpu_gptq_wgmma.py,
# docs/benchmarks.md): at M = 128 it beat the default (Triton) on gate_up (14336 strip-blocks) 103 vs 176 µs
# and down (7168) 55 vs 81, barely on qkv (3072: 32 vs 34) and not on o_proj (2048: 31 vs 28); at M = 64 the
# mid-M kernel is as fast or faster on two of four shapes, at M = 256 Triton on all four.
_WGMMA_DEFAULT_M: tuple[int, int] | None = (65, 128)
_WGMMA_MIN_WORK = 5000


def wgmma_takes_by_default(m: int, n: int, k: int, bits: int, act_order: bool, dtype: torch.dtype,
                           cap: tuple[int, int]) -> bool:  # fmt: skip
    """Whether the default dispatch (no config) runs the wgmma kernel for this call.

    Example:
        >>> wgmma_takes_by_default(128, 28672, 4096, 4, False, torch.float16, (9, 0))
        True
        >>> wgmma_takes_by_default(64, 28672, 4096, 4, False, torch.float16, (9, 0))
        False
    """
    if _WGMMA_DEFAULT_M is None or not _WGMMA_DEFAULT_M[0] <= m <= _WGMMA_DEFAULT_M[1]:
        return False
    if bits != 4 or act_order or dtype != torch.float16 or cap != (9, 0) or n % 256 or k % 128:
        return False
    return (n // 64) * (k // 128) >= _WGMMA_MIN_WORK


# The default dispatch's use of the warp-specialized kernel (gptq_cuda_wgmma_ws.py): plain 4-bit fp16 on
# sm_90 with M in one of these ranges on shapes of at least that many strip-blocks (N/64 · K/128); an empty
# tuple: never. Set from the H200 benchmark (benchmarks/gpu_gptq_wgmma.py, docs/benchmarks.md, run D): with x
# by the copy engine it beat the dispatch without it on all four Llama-3-8B shapes at M = 32..512 (1.02-3.1x,
# o_proj M=256 1.02x) and at 1024 on three (1.11-1.31x; qkv 0.99x, a tie). M < 32 was not measured.
_RSWG_DEFAULT: tuple[tuple[int, int, int], ...] = ((32, 1 << 20, 0),)


def wgmma_default_kind(m: int, n: int, k: int, bits: int, act_order: bool, dtype: torch.dtype,
                       cap: tuple[int, int]) -> bool | str:  # fmt: skip
    """Which wgmma kernel the default dispatch (no config) runs for this call: "ws" (the warp-specialized
    one), True (the single-warpgroup one, `wgmma_takes_by_default`) or False (neither); the value of a
    plan's "wgmma" key.

    Example:
        >>> wgmma_default_kind(128, 28672, 4096, 4, False, torch.float16, (9, 0)) in ("ws", True)
        True
        >>> wgmma_default_kind(128, 28672, 4096, 4, True, torch.float16, (9, 0))  # act-order
        False
    """
    if (
        bits == 4
        and not act_order
        and dtype == torch.float16
        and cap == (9, 0)
        and not n % 128
        and not k % 128
    ):
        work = (n // 64) * (k // 128)
        if any(lo <= m <= hi and work >= w for lo, hi, w in _RSWG_DEFAULT):
            return "ws"
    return wgmma_takes_by_default(m, n, k, bits, act_order, dtype, cap)
