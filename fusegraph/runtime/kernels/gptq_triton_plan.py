"""The Triton GPTQ kernels' launch configuration (`gptq_matmul.py`): kernel choice (gemv, mma, general), tiles,
split-K and where the dequantize-then-cuBLAS path starts; tuned on an H100. Re-exported by `gptq_plan.py`.

No Triton kernels live here, so this module is plain torch and is shared by the regular and the interpreter-mode
copies of `gptq_matmul.py`.
"""

from __future__ import annotations

from typing import Any

import torch
import triton

__all__ = ["dequant_min_m", "pick_config", "sm_count"]


_SM_COUNT: dict[torch.device, int] = {}


def sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 4  # the interpreter: a few splits exercise the split-K path
    if device not in _SM_COUNT:
        _SM_COUNT[device] = torch.cuda.get_device_properties(device).multi_processor_count
    return _SM_COUNT[device]


# ---- launch configuration ------------------------------------------------------------------------------


def _fast_block_k(bits: int, group_size: int, k: int, kernel: str) -> int | None:
    """BLOCK_K for the per-tile kernels (divides group_size; ≥ 16 packed rows for the dots), or None."""
    pack = 32 // bits
    for bk in (128, 256, 64, 32, 512):
        if group_size % bk or k % bk or bk % pack:
            continue
        if kernel == "mma" and bk // pack < 16:
            continue
        return bk
    return None


# Tuned on an H100 (benchmarks/gptq_sweep.py); the measurements behind this table: docs/benchmarks.md, "GPTQ launch table".
_GEMV_MAX_M = 1
_GEMV_CFG: dict[str, int] = {"block_n": 128, "block_k": 64, "num_warps": 4, "num_stages": 3, "x_vec": 1,
                             "programs_per_sm": 6}  # fmt: skip
_GENERAL_M = (17, 32)  # M in this range takes the general kernel (per-tile scales too)
_WANT_PROGRAMS_PER_SM = {"gemv": 3, "mma": 3, "general": 2}


# From this M on, the prefill path: dequantize W once to a transient fp16/bf16 [K, N] and let cuBLAS
# multiply (gptq_matmul._dequant_matmul). H100, K=4096 N=6144: M=128 in-register 41 us vs 43;
# M=192 50 vs 79; M=256 48 vs 83; M=512 57 vs 125 (docs/benchmarks.md).
_DEQUANT_MIN_M = 160


def dequant_min_m(device: torch.device) -> int:
    """The smallest M that takes the dequantize-then-matmul path by default."""
    return _DEQUANT_MIN_M


def _mma_tiles(m: int) -> dict[str, int]:
    if m <= 16:
        return {"block_m": 16, "block_n": 128, "num_warps": 4, "num_stages": 3}
    if m <= 32:
        return {"block_m": 32, "block_n": 128, "num_warps": 4, "num_stages": 3}
    if m <= 64:
        return {"block_m": 64, "block_n": 64, "num_warps": 4, "num_stages": 3}
    return {"block_m": 64, "block_n": 128, "num_warps": 4, "num_stages": 3}


def pick_config(
    m: int,
    n: int,
    k: int,
    group_size: int,
    bits: int,
    fast: bool,
    device: torch.device,
    kernel: str | None = None,
) -> dict[str, Any]:
    """Kernel, block sizes and split-K for this shape (`kernel` forces one)."""
    sms = sm_count(device)
    if kernel is None and _GENERAL_M[0] <= m <= _GENERAL_M[1]:
        kernel = "general"
    fast = fast and kernel != "general"
    if fast:
        kernel = kernel or ("gemv" if m <= _GEMV_MAX_M else "mma")
        block_k = _fast_block_k(bits, group_size, k, kernel)
        if block_k is None and kernel == "gemv":
            fast = False
        elif block_k is None:
            kernel, block_k = "gemv", _fast_block_k(bits, group_size, k, "gemv")
            fast = block_k is not None
    if fast:
        cfg: dict[str, Any] = dict(_GEMV_CFG) if kernel == "gemv" else _mma_tiles(m)
        pref = cfg.pop("block_k", None)  # a tile's own BLOCK_K, where it fits the groups
        if pref and group_size % pref == 0 and k % pref == 0 and pref % (32 // bits) == 0:
            block_k = pref
        cfg |= {"kernel": kernel, "block_k": block_k, "nibble_dots": 0}
        tiles = triton.cdiv(n, cfg["block_n"]) * (m if kernel == "gemv" else triton.cdiv(m, cfg["block_m"]))
    else:
        block_m = 16 if m <= 16 else 32 if m <= 32 else 64
        block_k = 128 if group_size % 128 == 0 or group_size >= k else 64 if group_size % 64 == 0 else 32
        cfg = {"kernel": "general", "block_m": block_m, "block_n": 128 if n >= 128 else max(16, triton.next_power_of_2(n)),
               "block_k": block_k, "num_warps": 4 if block_m <= 32 else 8, "num_stages": 3}  # fmt: skip
        tiles = triton.cdiv(m, block_m) * triton.cdiv(n, cfg["block_n"])
    want = cfg.pop("programs_per_sm", _WANT_PROGRAMS_PER_SM[cfg["kernel"]]) * sms
    cfg["split_k"] = max(1, min(want // tiles, k // cfg["block_k"], 16)) if tiles < sms else 1
    cfg["reduce_block"] = 256 if m * n >= 512 * sms else 64  # split-K reduce; no measured effect at M=1
    return cfg
