"""Triton GPTQ matmul (host side; the kernels are in `gptq_kernels.py`): `x [M, K] @ W [K, N]`, W dequantized in registers from AutoGPTQ tensors.

Layout (AutoGPTQ/GPTQModel): qweight int32 `[K*bits/32, N]`, value i of a word at bits
[i·bits, (i+1)·bits), row r holds k = r·(32/bits) + i; qzeros int32 `[G, N*bits/32]`, packed
the same way along N (v1 stores z − 1, v2 stores z; absent means z = 2^(bits−1), sym);
scales `[G, N]`; W[k, n] = (q[k, n] − z[g, n])·scales[g, n] with g = g_idx[k] (act-order) or
k // group_size. Bits 2, 4 and 8 (the widths whose values never straddle a word).

Three in-register kernels and a prefill path (`pick_config` / `dequant_min_m` (gptq_triton_plan.py)
choose; tuned on an H100, see docs/benchmarks.md):
- `_gptq_gemv_kernel` (M = 1): FMA GEMV with mantissa-bit unpacking (no int->float conversion);
- `_gptq_mma_kernel` (M = 2..16 and 33..): tensor-core tiles with per-tile scales after the dot;
- `_gptq_matmul_kernel` (the general one: act-order g_idx gathers, clip, group sizes the others
  cannot tile, and M = 17..32 where it measured fastest);
- M ≥ `dequant_min_m` (160): `_gptq_dequant_kernel` writes W once to a transient `[K, N]` in x's
  dtype, then `torch.matmul` (cuBLAS). This path alone materializes the dense weight (freed after
  the call): at M=512 one pass (23 µs, 2.7 TB/s) plus cuBLAS (37 µs) beat re-dequantizing every
  weight tile for each row tile (125 µs). Decode sizes never take it.
`_gptq_mma_kernel`'s SWAP_AB (W^T as the wgmma's register A operand) is correct but measured
slower at every M on an H100 (M=16 25 vs 17.6 µs); the sweep keeps it as a variant.
Small grids split K: each program writes its fp32 partial to a workspace `[split, M, N]` and
`_splitk_reduce_kernel` sums the slices in a fixed order (deterministic, two launches, no memset,
CUDA-graph safe). An atomic-ticket single-launch variant raced on an H100 (2026-11-27) and an
atomics-into-zeroed-buffer variant needed three launches; both are gone.
Act-order: `act_order_prepare` sorts the weight rows by argsort(g_idx) once (cached), and x's
columns are permuted per call, so act-order checkpoints run on the per-tile kernels.

The packed tile `[BLOCK_K/pack, BLOCK_N]` is loaded once and unpacked by a broadcast shift to
`[BLOCK_K/pack, pack, BLOCK_N]`, reshaped to `[BLOCK_K, BLOCK_N]` (row k = r·pack + i). When the
group is constant over a K tile (no act-order, group_size a multiple of BLOCK_K) the scale
is applied after the dot, per column: Σ_k x·(q − z)·s = s·Σ_k x·(q − z), which saves a
multiply per weight; (q − z) is exact in fp16 and bf16.
"""

from __future__ import annotations

from typing import Any

import torch
import triton

from fusegraph.runtime.kernels.gptq_kernels import (
    _gptq_dequant_kernel,
    _gptq_gemv_kernel,
    _gptq_matmul_kernel,
    _gptq_mma_kernel,
    _splitk_reduce_kernel,
)
from fusegraph.runtime.kernels.gptq_plan import act_order_prepare, dequant_min_m, pick_config

__all__ = ["act_order_prepare", "dequantize_weight", "gptq_matmul_triton"]


def gptq_matmul_triton(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    qzeros: torch.Tensor | None = None,
    g_idx: torch.Tensor | None = None,
    *,
    bits: int,
    group_size: int,
    sym: bool = False,
    zero_format: str = "v1",
    clip: float | None = None,
    desc_act: bool | None = None,
    act_order: str = "permute",
    config: dict[str, Any] | None = None,
) -> torch.Tensor:
    """`x @ W` for GPTQ tensors, dequantizing W in registers (W is never written to memory), except
    from M = `dequant_min_m` on (prefill), where W is dequantized once to a transient dense copy.

    Args:
        x: `[M, K]` fp16, bf16 or fp32.
        qweight, scales, qzeros, g_idx: AutoGPTQ tensors (see the module docstring).
        bits: 2, 4 or 8 (3-bit's cross-word packing is not handled here).
        group_size: rows per group, or -1 for one group.
        sym: symmetric quantization; only matters when qzeros is None (z = 2^(bits−1)).
        zero_format: "v1" (qzeros store z − 1) or "v2" (qzeros store z).
        clip: clamp the dequantized weight to [−clip, clip].
        desc_act: False means g_idx is the trivial k // group_size and may be ignored (the
            faster per-tile scales); None or True use g_idx when it is given.
        act_order: with an act-order g_idx, "permute" sorts the weight rows by group once
            (cached, see `act_order_prepare`) and permutes x's columns (index_select), so the
            per-tile kernels run; "gather" indexes scales and zeros through g_idx per row.
        config: override kernel ("gemv" | "mma" | "general" | "dequant"), block_m/block_n/block_k,
            split_k, num_warps, num_stages, nibble_dots, swap_ab, reduce_block, dq_block_k/dq_block_n/
            dq_num_warps (benchmarks and tests).

    Returns:
        `[M, N]` in x's dtype.

    Example:
        >>> y = gptq_matmul_triton(x, qw, scales, qz, bits=4, group_size=128)
    """
    if bits not in (2, 4, 8):
        raise ValueError(f"gptq_matmul_triton: bits must be 2, 4 or 8, got {bits}")
    if zero_format not in ("v1", "v2"):
        raise ValueError(f"gptq_matmul_triton: zero_format must be 'v1' or 'v2', got {zero_format!r}")
    if qzeros is None and not sym:
        raise ValueError("gptq_matmul_triton: qzeros may be absent only when sym=True")
    if act_order not in ("permute", "gather"):
        raise ValueError(f"gptq_matmul_triton: act_order must be 'permute' or 'gather', got {act_order!r}")
    m, k = x.shape
    pack = 32 // bits
    n = qweight.shape[1]
    if qweight.shape[0] * pack != k:
        raise ValueError(f"gptq_matmul_triton: qweight rows {qweight.shape[0]} * {pack} != K = {k}")
    group_size = k if group_size == -1 else group_size
    if desc_act is False:
        g_idx = None
    qweight = qweight.contiguous()
    scales = scales.contiguous()
    qzeros = None if qzeros is None else qzeros.contiguous()
    perm = None
    if g_idx is not None and act_order == "permute" and clip is None:
        prepared = act_order_prepare(qweight, g_idx, bits, group_size)
        if prepared is not None:
            qweight, perm = prepared
            g_idx = None
    forced = (config or {}).get("kernel")
    if forced == "dequant" or (forced is None and m >= dequant_min_m(x.device)):
        if perm is not None:  # the sorted rows dequantize with per-tile groups (gathering is slower)
            x = x.index_select(1, perm)
        return _dequant_matmul(x, qweight, scales, qzeros, g_idx, bits, group_size, zero_format, clip, config)
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    if m == 0 or n == 0:
        return out
    fast = g_idx is None and clip is None
    cfg = pick_config(m, n, k, group_size, bits, fast, x.device)
    if config and config.get("kernel", cfg["kernel"]) != cfg["kernel"]:
        if config["kernel"] != "general" and not fast:
            raise ValueError(
                f"gptq_matmul_triton: kernel {config['kernel']!r} needs per-tile scales (no g_idx, no clip)"
            )
        cfg = pick_config(m, n, k, group_size, bits, fast, x.device, kernel=config["kernel"])
    cfg |= config or {}
    kernel = cfg["kernel"]
    if perm is not None:  # x[:, perm] @ W_sorted == x @ W
        x = x.index_select(1, perm)
    block_k = cfg["block_k"]
    if kernel != "general" and (group_size % block_k or k % block_k):
        raise ValueError(f"gptq_matmul_triton: block_k {block_k} must divide group_size {group_size} and K")
    k_per_split = triton.cdiv(triton.cdiv(k, cfg["split_k"]), block_k) * block_k
    split_k = triton.cdiv(k, k_per_split)
    on_gpu = x.device.type == "cuda"
    dest = out if split_k == 1 else torch.empty((split_k, m, n), dtype=torch.float32, device=x.device)
    zeros_arg = qweight if qzeros is None else qzeros
    qz_stride = 0 if qzeros is None else qzeros.stride(0)
    common = {"BITS": bits, "HAS_ZEROS": qzeros is not None, "ZERO_V1": zero_format == "v1",
              "num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]}  # fmt: skip
    if kernel == "gemv":
        grid: tuple[int, ...] = (triton.cdiv(n, cfg["block_n"]), split_k, m)
        _gptq_gemv_kernel[grid](
            x, qweight, scales, zeros_arg, dest,
            n, k, group_size, k_per_split,
            x.stride(0), x.stride(1), qweight.stride(0), scales.stride(0), qz_stride, n, m * n,
            X_VEC=bool(cfg.get("x_vec", 1)), BLOCK_N=cfg["block_n"], BLOCK_K=block_k, **common,
        )  # fmt: skip
    elif kernel == "mma":
        grid = (triton.cdiv(m, cfg["block_m"]) * triton.cdiv(n, cfg["block_n"]), split_k)
        _gptq_mma_kernel[grid](
            x, qweight, scales, zeros_arg, dest,
            m, n, k, group_size, k_per_split,
            x.stride(0), x.stride(1), qweight.stride(0), scales.stride(0), qz_stride, n, m * n,
            NIBBLE_DOTS=bool(cfg.get("nibble_dots", 0)),
            BLOCK_M=cfg["block_m"], BLOCK_N=cfg["block_n"], BLOCK_K=block_k,
            # Triton 3.9's interpreter gets bf16 dots wrong, so on the CPU the dots run in fp32.
            DOT_FP32=not on_gpu or x.dtype == torch.float32, GROUP_M=cfg.get("group_m", 8),
            SWAP_AB=bool(cfg.get("swap_ab", 0)), **common,
        )  # fmt: skip
    else:
        grid = (triton.cdiv(n, cfg["block_n"]), triton.cdiv(m, cfg["block_m"]), split_k)
        _gptq_matmul_kernel[grid](
            x, qweight, scales, zeros_arg,
            qweight if g_idx is None else g_idx.contiguous(),
            out, dest,
            m, n, k, group_size, k_per_split, 0.0 if clip is None else float(clip),
            x.stride(0), x.stride(1), qweight.stride(0), scales.stride(0), qz_stride, out.stride(0),
            HAS_GIDX=g_idx is not None,
            GROUP_PER_TILE=g_idx is None and group_size % block_k == 0 and k_per_split % block_k == 0,
            HAS_CLIP=clip is not None, SPLIT_K=split_k,
            BLOCK_M=cfg["block_m"], BLOCK_N=cfg["block_n"], BLOCK_K=block_k,
            DOT_PRECISION="ieee" if x.dtype == torch.float32 or not on_gpu else "tf32",
            DOT_FP32=not on_gpu, **common,
        )  # fmt: skip
    if split_k > 1:
        block = cfg.get("reduce_block", 256)
        _splitk_reduce_kernel[(triton.cdiv(m * n, block),)](dest, out, m * n, SPLIT_K=split_k, BLOCK=block)
    return out


def _dequant_matmul(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    qzeros: torch.Tensor | None,
    g_idx: torch.Tensor | None,
    bits: int,
    group_size: int,
    zero_format: str,
    clip: float | None,
    config: dict[str, Any] | None,
) -> torch.Tensor:
    """The prefill path (M ≥ `dequant_min_m`): one Triton pass writes W in x's dtype to a transient
    `[K, N]` workspace (`dequantize_weight`), then `torch.matmul` (cuBLAS). Unlike the other paths
    this materializes the dense weight (2 bytes a weight, freed after the call): at large M the
    matmul is compute-bound and the per-tile dequantization of the in-register kernels, repeated
    for every row tile, costs more than one pass over W (docs/benchmarks.md). Act-order runs on the sorted rows
    (x permuted) like the other paths; the "gather" mode and clip are applied in the pass itself."""
    w = dequantize_weight(qweight, scales, qzeros, g_idx, bits=bits, group_size=group_size,
                          zero_format=zero_format, clip=clip, dtype=x.dtype, config=config)  # fmt: skip
    return torch.matmul(x, w)


def dequantize_weight(
    qweight: torch.Tensor,
    scales: torch.Tensor,
    qzeros: torch.Tensor | None,
    g_idx: torch.Tensor | None,
    *,
    bits: int,
    group_size: int,
    zero_format: str,
    clip: float | None,
    dtype: torch.dtype,
    config: dict[str, Any] | None = None,
) -> torch.Tensor:
    """W `[K, N]` in `dtype` from GPTQ tensors (one Triton pass; group_size already resolved from -1)."""
    cfg = config or {}
    pack = 32 // bits
    k, n = qweight.shape[0] * pack, qweight.shape[1]
    block_k = cfg.get("dq_block_k", max(64, 2 * pack))
    block_n = cfg.get("dq_block_n", 256 if n >= 256 else max(16, triton.next_power_of_2(n)))
    if block_k % pack:
        raise ValueError(f"gptq_matmul_triton: dq_block_k {block_k} must be a multiple of {pack}")
    w = torch.empty((k, n), dtype=dtype, device=qweight.device)
    grid = (triton.cdiv(k, block_k), triton.cdiv(n, block_n))
    _gptq_dequant_kernel[grid](
        qweight, scales, qweight if qzeros is None else qzeros,
        qweight if g_idx is None else g_idx.contiguous(), w,
        n, k, group_size, 0.0 if clip is None else float(clip),
        qweight.stride(0), scales.stride(0), 0 if qzeros is None else qzeros.stride(0), w.stride(0),
        BITS=bits, HAS_ZEROS=qzeros is not None, ZERO_V1=zero_format == "v1", HAS_GIDX=g_idx is not None,
        GROUP_PER_TILE=g_idx is None and group_size % block_k == 0, HAS_CLIP=clip is not None,
        BLOCK_N=block_n, BLOCK_K=block_k, num_warps=cfg.get("dq_num_warps", 4), num_stages=1,
    )  # fmt: skip
    return w
