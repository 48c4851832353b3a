"""The warp-specialized Hopper GPTQ kernel (`gptq_cuda_ws_src.py`) on the layout of `fg.gptq.repack`: plan and launch.

For plain 4-bit x `[M, K]` fp16/bf16 on a compute-capability-9.0 GPU, M ≥ 64 or so: a CTA is one
producer warpgroup (TMA of the raw words, cp.async of x, dequantization into shared memory) and one
or two consumer warpgroups (SS wgmma, 64 rows of x each) over a BM × BN output tile and a K slice
(split-K through a thread-block cluster). Compiled by NVRTC (`torch.cuda._compile_kernel`) for
sm_90a once per (device, `WsSpec`) in a process. `gptq_ws_matmul` runs it with a plan from
`ws_plan`; `maybe_ws` is the entry of the dispatcher (a config with "ws": True, optional "split_k",
"block_m", "block_n"). It never runs by default until measured (the routing lives in `gptq_plan`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from fusegraph.runtime.kernels.gptq_cuda_ws_src import (
    SMEM_LIMIT,
    WS_KERNEL_NAME,
    WsSpec,
    ring_smem_bytes,
    ws_kernel_source,
    ws_smem_bytes,
)

__all__ = ["gptq_ws_matmul", "maybe_ws", "ring_plan", "ws_plan", "ws_unsupported"]

_log = logging.getLogger(__name__)
_KERNELS: dict[tuple[int, WsSpec], Any] = {}
_FAILED: dict[tuple[int, WsSpec], str] = {}
_SMEM_SET: dict[tuple[int, WsSpec], int] = {}
_PLAN_KEYS = ("bm", "bn", "split_k", "stages", "rstages")


def _rings(bm: int, bn: int, split: int) -> tuple[int, int]:
    """The deepest (stages, rstages) that fit the shared memory of a CTA, tile ring first."""
    for stages, rstages in ((4, 4), (3, 4), (4, 3), (3, 3), (2, 4), (2, 3), (2, 2)):
        if ring_smem_bytes(bm, bn, split, stages, rstages) <= SMEM_LIMIT:
            return stages, rstages
    return 2, 1


def ring_plan(bm: int, bn: int, split: int, ctas: int = 0, nprod: int = 0) -> dict[str, int]:
    """A plan dict for this tile, split-K, CTA count and producer count with the deepest rings that fit.

    ctas: 0 launches one CTA a tile; n > 0 at most n CTAs that loop over the tiles (persistent, split 1
    only). nprod: producer warpgroups, 1 or 2 (0: 2 where the registers allow, i.e. not 128 x 256).

    Example:
        >>> ring_plan(128, 256, 2)
        {'bm': 128, 'bn': 256, 'split_k': 2, 'stages': 3, 'rstages': 4, 'ctas': 0, 'nprod': 1}
    """
    stages, rstages = _rings(bm, bn, split)
    if nprod == 0:
        nprod = 1 if (bm, bn) == (128, 256) else 2
    return {"bm": bm, "bn": bn, "split_k": split, "stages": stages, "rstages": rstages, "ctas": ctas,
            "nprod": nprod}  # fmt: skip


def ws_plan(m: int, n: int, k: int, bits: int, sms: int) -> dict[str, int] | None:
    """The tile and split-K of the warp-specialized kernel for x `[m, k]` · W `[k, n]`, or None when it cannot take it.

    BM = 64 for m ≤ 64, else 128; BN = 256 where it divides n, else 128; split-K: the smallest
    divisor s of K/128 (≤ 8, a cluster) whose CTAs (tiles · s) reach 45% of the `sms` SMs, or 90%
    when a CTA would take 48 or more 64-row block units (K/128/s · BM/64), else the largest. From
    the H200 runs (docs/benchmarks.md): the time a block hardly depends on BN or the producer
    count, so BN = 128 and extra CTAs mostly add work; a cost model of waves · work picked the
    wrong tile or split on 8 of 20 Llama-3-8B cells.
    Returns `ring_plan`'s dict (one CTA a tile).

    Example:
        >>> ws_plan(64, 6144, 4096, 4, 132)
        {'bm': 64, 'bn': 256, 'split_k': 4, 'stages': 4, 'rstages': 4, 'ctas': 0, 'nprod': 2}
    """
    if bits != 4 or m < 1 or n % 128 or k % 128 or sms < 1:
        return None
    bm = 64 if m <= 64 else 128
    bn = 256 if n % 256 == 0 else 128
    tiles = (m + bm - 1) // bm * (n // bn)
    splits = [d for d in range(1, 9) if (k // 128) % d == 0]
    units = (k // 128) * bm // 64
    split = next((d for d in splits if tiles * d >= (0.9 if units // d >= 48 else 0.45) * sms), splits[-1])
    return ring_plan(bm, bn, split)


def ws_unsupported(x: torch.Tensor, n: int, bits: int, perm: torch.Tensor | None) -> str | None:
    """Why the warp-specialized kernel cannot take these operands (perm: gather x first), or None."""
    if bits != 4 or perm is not None:
        return f"bits={bits}, act-order={perm is not None}: it takes plain 4-bit only (gather x through perm first)"
    if x.dtype not in (torch.float16, torch.bfloat16):
        return f"x is {x.dtype}: it takes float16 or bfloat16"
    if n % 128:
        return f"N={n} is not a multiple of 128 (the smallest column tile)"
    if x.dim() != 2 or x.shape[1] % 128:
        return f"x {tuple(x.shape)}: it takes [M, K] with K a multiple of 128"
    if x.device.type != "cuda":
        return "x is not a CUDA tensor"
    cap = torch.cuda.get_device_capability(x.device)
    if cap != (9, 0):
        return f"compute capability {cap}: it needs sm_90a (9.0: wgmma, setmaxnreg, TMA)"
    return None


def _kernel(spec: WsSpec, device: torch.device) -> Any:
    """The compiled kernel of `spec` on `device` (compiled once), its shared memory limit raised; RuntimeError if NVRTC fails."""
    key = (device.index or 0, spec)
    if key in _FAILED:
        raise RuntimeError(f"gptq_cuda_ws: {spec} did not compile: {_FAILED[key]}")
    kern = _KERNELS.get(key)
    if kern is None:
        if torch.cuda.is_current_stream_capturing():
            raise RuntimeError(f"gptq_cuda_ws: {spec} is not compiled; run it once before CUDA-graph capture")
        try:
            with torch.cuda.device(device):
                kern = torch.cuda._compile_kernel(
                    ws_kernel_source(spec), WS_KERNEL_NAME, compute_capability="90a"
                )
        except Exception as err:  # noqa: BLE001 - no NVRTC, an old one without sm_90a, a compile error
            _FAILED[key] = f"{type(err).__name__}: {str(err)[:300]}"
            _log.warning("gptq_cuda_ws: %s did not compile: %s", spec, _FAILED[key])
            raise RuntimeError(f"gptq_cuda_ws: {spec} did not compile: {_FAILED[key]}") from err
        _KERNELS[key] = kern
    smem = ws_smem_bytes(spec)
    if smem > _SMEM_SET.get(key, 48 * 1024 - 1):
        if hasattr(kern, "set_shared_memory_config"):
            kern.set_shared_memory_config(smem)
        else:
            from torch.cuda._utils import _check_cuda, _get_gpu_runtime_library

            _check_cuda(_get_gpu_runtime_library().cuFuncSetAttribute(kern.func, 8, smem))  # max dynamic smem
        _SMEM_SET[key] = smem
    return kern


def _check_plan(plan: dict[str, int], m: int, n: int, k: int) -> None:
    missing = [key for key in _PLAN_KEYS if key not in plan]
    if missing:
        raise ValueError(f"gptq_ws_matmul: plan lacks {missing}; ws_plan gives {list(_PLAN_KEYS)}")
    if plan["bm"] not in (64, 128):
        raise ValueError(f"gptq_ws_matmul: plan bm must be 64 or 128, got {plan['bm']}")
    if plan["bn"] not in (128, 256) or n % plan["bn"]:
        raise ValueError(f"gptq_ws_matmul: plan bn must be 128 or 256 and divide N={n}, got {plan['bn']}")
    if plan.get("ctas", 0) < 0 or plan.get("ctas", 0) and plan["split_k"] > 1:
        raise ValueError(
            f"gptq_ws_matmul: plan ctas must be >= 0, and 0 unless split_k = 1, got {plan.get('ctas')}"
        )
    blocks = k // 128
    if not 1 <= plan["split_k"] <= 8 or blocks % plan["split_k"]:
        raise ValueError(
            f"gptq_ws_matmul: split_k must be 1..8 and divide K/128 = {blocks}, got {plan['split_k']}"
        )


def gptq_ws_matmul(
    x: torch.Tensor,
    qweight_t: torch.Tensor,
    scales: torch.Tensor,
    qzeros_t: torch.Tensor,
    *,
    bits: int,
    group_size: int,
    plan: dict[str, int] | None = None,
    zero_format: str = "v1",
) -> torch.Tensor:
    """`x @ W` for plain 4-bit repacked GPTQ tensors with the warp-specialized kernel (module docstring).

    Args:
        x: `[M, K]` float16 or bfloat16 on a compute-capability-9.0 GPU (copied to 16-byte alignment if needed).
        qweight_t: int32 `[N/64, K/8, 64]`, the layout of `fg.gptq.repack`.
        scales: `[G, N]` in x's dtype; qzeros_t: int32 `[G, N/8]` (rows 16-byte aligned).
        bits: 4 (anything else is refused).
        group_size: a multiple of 128 dividing K, or -1 (one group).
        plan: `ws_plan`'s dict (tile, split-K, ring depths); None: `ws_plan` for this device.
        zero_format: "v1" (qzeros_t stores z − 1) or "v2".

    Raises:
        ValueError: naming the operand, dims or plan field it cannot take.

    Example:
        >>> y = gptq_ws_matmul(x, r["qweight"], scales, r["qzeros"], bits=4, group_size=128)
    """
    if x.dim() != 2:
        raise ValueError(f"gptq_ws_matmul: x must be 2-D [M, K], got shape {tuple(x.shape)}")
    m, k = x.shape
    n = qweight_t.shape[0] * 64
    if qweight_t.dtype != torch.int32 or tuple(qweight_t.shape) != (n // 64, k // 8, 64):
        raise ValueError(
            f"gptq_ws_matmul: qweight_t must be int32 [N/64, K/8, 64] = [{n // 64}, {k // 8}, 64] for K={k}, "
            f"got {qweight_t.dtype} {tuple(qweight_t.shape)}"
        )
    gs = k if group_size == -1 else group_size
    if gs < 128 or gs % 128 or k % gs:
        raise ValueError(
            f"gptq_ws_matmul: group_size must be a multiple of 128 dividing K={k} (or -1), got {group_size}"
        )
    if scales.dtype != x.dtype or tuple(scales.shape) != (k // gs, n):
        raise ValueError(
            f"gptq_ws_matmul: scales must be {x.dtype} [G, N] = [{k // gs}, {n}], got {scales.dtype} {tuple(scales.shape)}"
        )
    if qzeros_t.dtype != torch.int32 or tuple(qzeros_t.shape) != (k // gs, n // 8):
        raise ValueError(
            f"gptq_ws_matmul: qzeros_t must be int32 [G, N/8] = [{k // gs}, {n // 8}], "
            f"got {qzeros_t.dtype} {tuple(qzeros_t.shape)}"
        )
    if zero_format not in ("v1", "v2"):
        raise ValueError(f"gptq_ws_matmul: zero_format must be 'v1' or 'v2', got {zero_format!r}")
    why = ws_unsupported(x, n, bits, None)
    if why is not None:
        raise ValueError(f"gptq_ws_matmul: {why}")
    for name, t, unit in (("qweight_t", qweight_t, 16), ("scales", scales, 8), ("qzeros_t", qzeros_t, 4)):
        rows_ok = (
            t.dim() == 3
            and t.is_contiguous()
            or t.dim() == 2
            and t.stride(1) == 1
            and t.stride(0) % unit == 0
        )
        if t.data_ptr() % 16 or not rows_ok:
            raise ValueError(
                f"gptq_ws_matmul: {name} must be 16-byte aligned with 16-byte aligned rows (TMA)"
            )
    if x.data_ptr() % 16 or x.stride(0) % 8 or x.stride(1) != 1:
        x = x.contiguous() if not x.is_contiguous() else x.clone()  # cp.async of 16-byte chunks
    if plan is None:
        plan = ws_plan(m, n, k, bits, torch.cuda.get_device_properties(x.device).multi_processor_count)
        if plan is None:
            raise ValueError(f"gptq_ws_matmul: no plan for M={m} N={n} K={k} bits={bits}")
    _check_plan(plan, m, n, k)
    spec = WsSpec(bf16=x.dtype == torch.bfloat16, zero_v1=zero_format == "v1", bm=plan["bm"], bn=plan["bn"],
                  split=plan["split_k"], stages=plan["stages"], rstages=plan["rstages"],
                  nprod=plan.get("nprod", 1))  # fmt: skip
    kern = _kernel(spec, x.device)
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    if m == 0:
        return out
    mtiles = (m + spec.bm - 1) // spec.bm
    ntiles = mtiles * (n // spec.bn)
    ctas = ntiles if not plan.get("ctas") else min(int(plan["ctas"]), ntiles)
    kern(
        grid=(ctas, spec.split, 1), block=(128 * (spec.bm // 64 + spec.nprod), 1, 1), shared_mem=ws_smem_bytes(spec),
        args=[x, qweight_t, scales, qzeros_t, out, m, n, k, gs, k // 128 // spec.split, mtiles, ntiles, x.stride(0),
              scales.stride(0), qzeros_t.stride(0), out.stride(0)],
    )  # fmt: skip
    return out


def maybe_ws(
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
    """`x @ W` with the warp-specialized kernel, as the dispatcher calls it for a config with "ws": True.

    Act-order runs on x's columns gathered once through perm (the repacked rows are sorted).
    "split_k", "block_m", "block_n", "ctas", "nprod" in `config` override the plan's. Raises ValueError naming the
    reason when the kernel cannot run.

    Example:
        >>> y = maybe_ws(x, r["qweight"], scales, r["qzeros"], None, bits=4, group_size=128,
        ...              zero_format="v1", config={"kernel": "cuda", "ws": True}, sms=132)
    """
    m, k = x.shape
    n = qweight_t.shape[0] * 64
    why = ws_unsupported(x, n, bits, None)
    plan = ws_plan(m, n, k, bits, sms) if why is None else None
    if plan is None:
        raise ValueError(
            f"gptq_tiled_matmul: the ws kernel cannot run: {why or f'no plan for M={m} N={n} K={k}'}"
        )
    if perm is not None:
        x = x.index_select(1, perm)  # act-order: the kernel runs on the row-sorted weight
    if any(key in config for key in ("split_k", "block_m", "block_n", "ctas", "nprod")):
        plan = ring_plan(int(config.get("block_m", plan["bm"])), int(config.get("block_n", plan["bn"])),
                         int(config.get("split_k", plan["split_k"])), int(config.get("ctas", plan["ctas"])),
                         int(config.get("nprod", 0)))  # fmt: skip
    return gptq_ws_matmul(x, qweight_t, scales, qzeros_t, bits=bits, group_size=group_size, plan=plan,
                          zero_format=zero_format)  # fmt: skip
