"""Triton GPTQ matmul on the repacked layout of `fg.gptq.repack` (host side; kernels in
`gptq_tiled_kernels.py` and `gptq_tiled_mma.py`): `x [M, K] @ W [K, N]`.

Layout (made once, at compile time, by `fusegraph.ops.gptq_layout.repack`):
- qweight_t int32 `[N/64, K/P, 64]`, P = 32/CB values a word, CB = 8 for 8-bit checkpoints and
  4 otherwise (2- and 3-bit values sit in 4-bit containers: correct, at 4-bit speed). Strip s
  holds columns 64·s..64·s+63, contiguous over K, so a program streams one contiguous run. In
  128-row block b, word row r holds in slot i = e·P/2 + j the value of row k = 128·b + 2(j·R + r) + e
  (R = 128/P): a lop3/prmt pair of slots multiplies one 32-bit pair of x.
- rows sorted by group (act-order) once: row k of the layout is checkpoint row perm[k]; the CUDA
  kernels gather x through perm (small work) or take x permuted once (`gptq_plan.cuda_plan`); the Triton
  GEMV gathers x through perm in the kernel (or, for long K, permutes it first), the tensor-core
  paths permute x once per call (`gptq_cuda_permute.permute_rows`, or the Triton `_permute_cols_kernel`
  without NVRTC: one launch; torch's index_select along dim 1 cost 4-7 µs here), the prefill pass
  scatters W's rows back to the checkpoint order.
- qzeros_t int32 `[G, N·CB/32]`, packed along N at CB bits, in the checkpoint's zero format
  (always present: a sym checkpoint's constant z is written out); scales `[G, N]` unchanged.
Needs K % 128 == 0, N % 64 == 0 and groups of a multiple of 128 rows (or one group).

Paths (`plan` picks them per shape and SM count; `config` overrides; H200 numbers in
docs/benchmarks.md). First, the compiled CUDA kernels (`gptq_cuda.py`, NVRTC) run where
`gptq_plan.cuda_plan` takes the call (the small-M and mid-M kernels for M ≤ 64; on sm_90 the
warp-specialized wgmma kernel of `gptq_cuda_wgmma*.py` for 4-bit fp16/bf16 and 8-bit fp16 from
M = 32, any M);
otherwise (or without NVRTC) the Triton ones:
- "gemv" (M ≤ 2, fp16/bf16 x): one row per program, fp16x2 FMA after the lop3/prmt dequantization;
- "mma" (M < 192, and fp32 x): tensor-core tiles, P dots of K = R per 128-row block;
- "nat" (2 < M ≤ 16, N % 128 == 0, 2-4 bits): tensor-core tiles, the block's scaled weights
  joined back into row order in registers, one dot of K = 128 per block;
- "dequant" (M ≥ 192): W written once in x's dtype (transient), then `torch.matmul` (cuBLAS).
Options (off by default): "pf" asks L2 for each program's weight run (or its first "pf_lines"
lines) before anything else, and "pdl" launches with programmatic dependent launch (Hopper):
the program waits for the previous kernel only after that, so between consecutive PDL-launched
GPTQ matmuls the weight stream starts under the previous kernel's tail.
Split-K: each program writes an fp32 slice; with "ticket" the last program of each tile (atomic
counter, acq_rel after a CTA barrier, slices read through L2) sums the slices in order and
writes the output (one launch, deterministic); otherwise `gptq_kernels._splitk_reduce_kernel` does (two).
"""

from __future__ import annotations

from typing import Any

import torch
import triton

from fusegraph.runtime.kernels.gptq_cuda import group_rows, maybe_gptq_cuda
from fusegraph.runtime.kernels.gptq_cuda_permute import permute_rows
from fusegraph.runtime.kernels.gptq_kernels import _splitk_reduce_kernel
from fusegraph.runtime.kernels.gptq_tiled_kernels import _permute_cols_kernel, _tiled_gemv_kernel
from fusegraph.runtime.kernels.gptq_tiled_mma import (
    _tiled_dequant_kernel,
    _tiled_mma_kernel,
    _tiled_nat_kernel,
)
from fusegraph.runtime.kernels.gptq_triton_plan import sm_count
from fusegraph.runtime.kernels.tensor_cache import zeroed_tickets

__all__ = ["gptq_tiled_matmul", "tiled_dequantize", "plan"]

KB, NB = 128, 64
_DEQUANT_MIN_M = 192
_GEMV_MAX_M = 2
_PERMUTE_X_MIN_K = 8192  # act-order GEMV: from this K on, permute x once instead of gathering per program


def _counters(device: torch.device, n: int) -> torch.Tensor:
    """Zeroed int32 tickets (one per output tile) of a device; every launch leaves them zeroed again,
    so later launches and CUDA-graph replays reuse them. Launches on one device share them: two
    split-K launches must not run at the same time on two streams."""
    return zeroed_tickets("gptq triton split-k", device, n, at_least=1 << 16)


def _triton_has_pdl() -> bool:
    try:
        import dataclasses

        from triton.backends.nvidia.compiler import CUDAOptions

        fields = {f.name for f in dataclasses.fields(CUDAOptions)}
        return "launch_pdl" in fields and hasattr(triton.language.extra.cuda, "gdc_wait")
    except Exception:  # noqa: BLE001 - an install without the NVIDIA backend: no PDL
        return False


_TRITON_PDL = _triton_has_pdl()


_PDL_OK: dict[torch.device, bool] = {}


def pdl_supported(device: torch.device) -> bool:
    """Whether kernels on `device` can be launched with programmatic dependent launch (a Hopper or
    newer GPU and a Triton whose launcher takes `launch_pdl`)."""
    if device.type != "cuda" or not _TRITON_PDL:
        return False
    if device not in _PDL_OK:
        _PDL_OK[device] = torch.cuda.get_device_capability(device)[0] >= 9
    return _PDL_OK[device]


def _pf_lines(cfg: dict[str, Any], k_per_split: int, p: int, threads: int) -> int:
    """PF_LINES for a weight run of k_per_split rows (`cfg["pf"]`: 0 none, 1 the whole run, or an
    explicit `cfg["pf_lines"]`): a power of two, at least one line per thread."""
    if not cfg.get("pf", 0):
        return 0
    lines = int(cfg.get("pf_lines") or 2 * k_per_split // p)  # 128-byte lines of 64 words
    return max(int(triton.next_power_of_2(lines)), threads)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def plan(m: int, n: int, k: int, cb: int, device: torch.device, act_order: bool = False) -> dict[str, Any]:
    """Kernel, tiles and split-K for this shape: split-K so that about `waves`·SMs programs run.

    Tuned on an H200 (benchmarks/gptq_sweep.py, 2026-11-30; docs/benchmarks.md): the GEMV with 2
    warps and U = 4 blocks a step (1 at 8 bits), about 6 programs an SM (4 with act-order's x
    gathers); the tensor-core tiles with about 3; for 2 < M ≤ 16 the row-order tiles ("nat" 16×128,
    split-K to about 3 programs an SM; M=4 / 16: qkv 14.2 / 14.8 µs vs 15.2 / 15.5 for "mma",
    gate_up 54.1 / 52.3 vs 54.2 / 59.1, down 26.5 / 27.3 vs 31.2 / 31.5, o_proj 11.4 / 12.5 vs
    11.9 / 12.2); not at 8 bits (qkv M=16: 20.4 vs 15.2 µs). The L2 prefetch and PDL stay off:
    they help only between consecutive PDL-launched kernels (docs/benchmarks.md).
    """
    sms = sm_count(device)  # 4 in the interpreter: a few splits exercise the split-K paths
    blocks = k // KB
    if m <= _GEMV_MAX_M:
        tiles = (n // NB) * m
        want = (4 if act_order else 6) * sms
        split = max((d for d in _divisors(blocks) if d <= 16 and tiles * d <= want), default=1)
        per = blocks // split
        unroll = 1 if cb == 8 else max(d for d in (1, 2, 4) if per % d == 0)
        return {"kernel": "gemv", "split_k": split, "unroll": unroll, "num_warps": 2, "num_stages": 3,
                "ticket": True, "permute_x": act_order and k >= _PERMUTE_X_MIN_K}  # fmt: skip
    if m <= 16 and n % 128 == 0 and cb == 4:
        tiles = triton.cdiv(m, 16) * (n // 128)
        split = max((d for d in _divisors(blocks) if d <= 16 and tiles * d <= 3 * sms), default=1)
        return {"kernel": "nat", "block_m": 16, "block_n": 128, "split_k": split, "unroll": 1, "num_warps": 4,
                "num_stages": 3, "ticket": True}  # fmt: skip
    if m < _DEQUANT_MIN_M:
        block_m = 16 if m <= 16 else 32 if m <= 32 else 64
        block_n = 64
        tiles = triton.cdiv(m, block_m) * (n // block_n)
        want = 3 * sms
        split = max((d for d in _divisors(blocks) if d <= 16 and tiles * d <= want), default=1)
        return {"kernel": "mma", "block_m": block_m, "block_n": block_n, "split_k": split, "unroll": 1,
                "num_warps": 4, "num_stages": 3, "ticket": True}  # fmt: skip
    return {"kernel": "dequant", "block_n": 64, "num_warps": 4}


def _permute_cols(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """x[:, perm] (contiguous) in one launch: `gptq_cuda_permute.permute_rows` (rows staged in shared
    memory; on an H200 at M ≥ 256 1.3-1.8x faster at K = 4096, 2.7-3.2x at K = 14336) where it runs,
    else the Triton gather."""
    y = permute_rows(x, perm) if x.is_cuda and perm.dtype == torch.int32 else None
    if y is not None:
        return y
    m, k = x.shape
    y = torch.empty((m, k), dtype=x.dtype, device=x.device)
    block = min(1024, triton.next_power_of_2(k))
    _permute_cols_kernel[(triton.cdiv(k, block), m)](x, perm, y, k, x.stride(0), BLOCK=block, num_warps=4)
    return y


def _use_asm(x: torch.Tensor, cb: int) -> bool:
    """The lop3/prmt dequantization: CUDA fp16 (4 and 8 bits) and bf16 (4 bits)."""
    return x.device.type == "cuda" and (x.dtype == torch.float16 or (x.dtype == torch.bfloat16 and cb == 4))


def gptq_tiled_matmul(
    x: torch.Tensor,
    qweight_t: torch.Tensor,
    scales: torch.Tensor,
    qzeros_t: torch.Tensor,
    perm: torch.Tensor | None = None,
    *,
    bits: int,
    group_size: int,
    zero_format: str = "v1",
    config: dict[str, Any] | None = None,
) -> torch.Tensor:
    """`x @ W` for repacked GPTQ tensors (see the module docstring for the layout).

    Args:
        x: `[M, K]` fp16, bf16 or fp32 (fp16 is the fast path; bf16 is fast at 4 bits).
        qweight_t: int32 `[N/64, K/P, 64]` from `repack`.
        scales: `[G, N]`.
        qzeros_t: int32 `[G, N·CB/32]`.
        perm: int32 `[K]` for act-order (row k of the layout is checkpoint row perm[k]), or None.
        bits: the checkpoint's bits (2, 3, 4 or 8); CB = 8 if bits == 8 else 4.
        group_size: rows per group, -1 for one group; a multiple of 128.
        zero_format: "v1" (qzeros_t stores z − 1) or "v2".
        config: override "kernel" ("cuda" | "gemv" | "mma" | "dequant"; "cuda" also takes "warps", "cluster",
            "min_blocks", "l2pf", "mid", see `gptq_cuda.maybe_gptq_cuda`; {"cuda": False} keeps to Triton), "split_k", "unroll", "block_m",
            "block_n", "num_warps", "num_stages", "ticket", "use_asm", "permute_x" (act-order: permute x
            once first; False: gemv and mma gather it through perm in the kernel), "pf" (0 | 1: ask L2 for each
            program's weight run first; "pf_lines" caps it), "pdl" (0-3, see `_pdl_enter`; Hopper
            only, else 0) (benchmarks, tests).

    Returns:
        `[M, N]` in x's dtype.

    Example:
        >>> t = repack(qweight, scales, qzeros, g_idx, bits=4, group_size=128, desc_act=True)
        >>> y = gptq_tiled_matmul(x, t["qweight"], scales, t["qzeros"], t["perm"], bits=4, group_size=128)
    """
    if bits not in (2, 3, 4, 8):
        raise ValueError(f"gptq_tiled_matmul: bits must be 2, 3, 4 or 8, got {bits}")
    if zero_format not in ("v1", "v2"):
        raise ValueError(f"gptq_tiled_matmul: zero_format must be 'v1' or 'v2', got {zero_format!r}")
    cb = 8 if bits == 8 else 4
    p = 32 // cb
    m, k = x.shape
    n = qweight_t.shape[0] * NB
    if qweight_t.dim() != 3 or qweight_t.shape[1] * p != k or qweight_t.shape[2] != NB or k % KB:
        raise ValueError(
            f"gptq_tiled_matmul: qweight_t {list(qweight_t.shape)} does not fit K = {k} (want [N/64, K/{p}, 64], "
            f"K a multiple of {KB})"
        )
    group_size = group_rows(group_size, k, "gptq_tiled_matmul")
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    if m == 0:
        return out
    y = maybe_gptq_cuda(
        x.contiguous(), qweight_t.contiguous(), scales.contiguous(), qzeros_t.contiguous(), perm, bits=bits,
        group_size=group_size, zero_format=zero_format, config=config,
    )  # fmt: skip
    if y is not None:
        return y  # the compiled CUDA kernel (gptq_cuda.py), where its plan takes M and the shape
    cfg = plan(m, n, k, cb, x.device, perm is not None)
    if config and config.get("kernel", cfg["kernel"]) != cfg["kernel"]:
        cfg = plan({"gemv": 1, "mma": 17, "nat": 17, "dequant": _DEQUANT_MIN_M}[config["kernel"]], n, k, cb, x.device,
                   perm is not None)  # fmt: skip
    cfg |= config or {}
    x, qweight_t, scales, qzeros_t = (
        x.contiguous(),
        qweight_t.contiguous(),
        scales.contiguous(),
        qzeros_t.contiguous(),
    )
    if cfg["kernel"] == "gemv" and x.dtype == torch.float32:
        cfg = plan(17, n, k, cb, x.device) | {k_: v for k_, v in (config or {}).items() if k_ != "kernel"}
    if perm is not None and (cfg["kernel"] == "nat" or cfg.get("permute_x", cfg["kernel"] == "mma")):
        x, perm = _permute_cols(x, perm), None  # one gather of x, not one per tile
    if cfg["kernel"] == "gemv" and x.data_ptr() % 4:  # the GEMV reads x as 32-bit pairs
        x = x.clone()
    use_asm = bool(cfg.get("use_asm", True)) and _use_asm(x, cb)
    on_gpu = x.device.type == "cuda"
    pdl = int(cfg.get("pdl", 0)) if pdl_supported(x.device) else 0
    launch = {"launch_pdl": True} if pdl else {}
    common = {"CB": cb, "ZERO_V1": zero_format == "v1", "HAS_PERM": perm is not None, "USE_ASM": use_asm,
              "BF16": x.dtype == torch.bfloat16}  # fmt: skip
    perm_arg = qweight_t if perm is None else perm
    if cfg["kernel"] == "dequant":
        w = tiled_dequantize(qweight_t, scales, qzeros_t, perm, bits=bits, group_size=group_size,
                             zero_format=zero_format, dtype=x.dtype, block_n=cfg.get("block_n", 128),
                             use_asm=use_asm)  # fmt: skip
        return torch.matmul(x, w, out=out)
    blocks = k // KB
    split = cfg["split_k"]
    if blocks % split:
        raise ValueError(f"gptq_tiled_matmul: split_k {split} must divide K/128 = {blocks}")
    k_per_split = k // split
    ws = out if split == 1 else torch.empty((split, m, n), dtype=torch.float32, device=x.device)
    ticket = bool(cfg.get("ticket", True)) and split > 1
    args = (x, qweight_t, scales, qzeros_t, perm_arg, out, ws)
    if cfg["kernel"] == "gemv":
        unroll = cfg["unroll"]
        if (k_per_split // KB) % unroll:
            raise ValueError(f"gptq_tiled_matmul: unroll {unroll} must divide the blocks per split")
        cnt = _counters(x.device, m * (n // NB)) if ticket else ws
        _tiled_gemv_kernel[(n // NB, split, m)](
            *args, cnt, m, n, k, group_size, k_per_split, x.stride(0), scales.stride(0), qzeros_t.stride(0),
            out.stride(0), U=unroll, SPLIT_K=split, TICKET=ticket, PREFETCH=bool(cfg.get("prefetch", False)),
            PF_LINES=_pf_lines(cfg, k_per_split, p, 32 * cfg["num_warps"]) if on_gpu else 0, PDL=pdl,
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], **common, **launch,
        )  # fmt: skip
    else:
        block_m, block_n, unroll = cfg["block_m"], cfg["block_n"], cfg.get("unroll", 1)
        if n % block_n or (k_per_split // KB) % unroll:
            raise ValueError(
                f"gptq_tiled_matmul: block_n {block_n} must divide N = {n}, unroll {unroll} the blocks per split"
            )
        grid = (triton.cdiv(m, block_m) * (n // block_n), split)
        cnt = _counters(x.device, grid[0]) if ticket else ws
        # the interpreter's bf16/fp16 dots are not exact: on the CPU (and for fp32 x) they run in fp32
        dot_fp32 = x.device.type != "cuda" or x.dtype == torch.float32
        tiles = {"BLOCK_M": block_m, "BLOCK_N": block_n, "SPLIT_K": split, "TICKET": ticket, "DOT_FP32": dot_fp32,
                 "GROUP_M": cfg.get("group_m", 8), "PDL": pdl, "num_warps": cfg["num_warps"],
                 "num_stages": cfg["num_stages"],
                 "PF_LINES": _pf_lines(cfg, k_per_split, p, 32 * cfg["num_warps"]) if on_gpu else 0}  # fmt: skip
        if cfg["kernel"] == "nat":
            _tiled_nat_kernel[grid](
                x, qweight_t, scales, qzeros_t, out, ws, cnt, m, n, k, group_size, k_per_split, x.stride(0),
                scales.stride(0), qzeros_t.stride(0), out.stride(0), CB=cb, ZERO_V1=zero_format == "v1",
                USE_ASM=use_asm, BF16=x.dtype == torch.bfloat16, **tiles, **launch,
            )  # fmt: skip
        else:
            _tiled_mma_kernel[grid](
                *args, cnt, m, n, k, group_size, k_per_split, x.stride(0), scales.stride(0), qzeros_t.stride(0),
                out.stride(0), SCALE_W=bool(cfg.get("scale_w", False)), U=unroll,
                **tiles, **common, **launch,
            )  # fmt: skip
    if split > 1 and not ticket:
        block = 256
        _splitk_reduce_kernel[(triton.cdiv(m * n, block),)](ws, out, m * n, SPLIT_K=split, BLOCK=block)
    return out


def tiled_dequantize(
    qweight_t: torch.Tensor,
    scales: torch.Tensor,
    qzeros_t: torch.Tensor,
    perm: torch.Tensor | None,
    *,
    bits: int,
    group_size: int,
    zero_format: str,
    dtype: torch.dtype,
    block_n: int = 128,
    use_asm: bool | None = None,
) -> torch.Tensor:
    """W `[K, N]` in `dtype` and the checkpoint's row order, from the repacked tensors (one pass)."""
    cb = 8 if bits == 8 else 4
    k, n = qweight_t.shape[1] * (32 // cb), qweight_t.shape[0] * NB
    group_size = k if group_size == -1 else group_size
    block_n = min(block_n, n)
    while n % block_n:
        block_n //= 2
    w = torch.empty((k, n), dtype=dtype, device=qweight_t.device)
    if use_asm is None:
        use_asm = _use_asm(w, cb)
    _tiled_dequant_kernel[(k // KB, n // block_n)](
        qweight_t, scales, qzeros_t, qweight_t if perm is None else perm, w, n, k, group_size,
        scales.stride(0), qzeros_t.stride(0), w.stride(0), CB=cb, ZERO_V1=zero_format == "v1",
        HAS_PERM=perm is not None, USE_ASM=use_asm and dtype != torch.float32, BF16=dtype == torch.bfloat16,
        BLOCK_N=block_n, num_warps=4,
    )  # fmt: skip
    return w
