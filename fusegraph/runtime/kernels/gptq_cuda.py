"""The compiled CUDA C++ GPTQ kernels for small M (≤ 16) and mid M (≤ 64), on the layout of `fg.gptq.repack`.

`gptq_tiled_matmul` (the Triton kernels) calls `maybe_gptq_cuda` first: `gptq_plan.cuda_plan`, the one
place that routes, names the CUDA kernel ("small", "mid", or on sm_90 "wgmma": the Hopper kernels of
`gptq_cuda_wgmma.py`) and its plan, and this module launches it; where there is no
plan or the kernel cannot be built here, it returns None and the Triton kernels run. The sources are
`gptq_cuda_src.py` and `gptq_cuda_mid.py` (when M > 16 or the plan says "mid": by default 4-bit
M 9..64 and M ≤ 8 on N ≥ 6144, see `gptq_plan.cuda_plan`; act-order as its plain plan, x permuted once by
`_permute_x` where the kernel's own gather through perm would cost more); they are
compiled at run time by NVRTC through `torch.cuda._compile_kernel`
(no nvcc on the user's machine), once per (device, `KernelSpec` / `MidSpec`) in a process. If NVRTC or that
function is missing, or a compile fails, the Triton path runs and `cuda_path_status()` says why
(logged once at WARNING). `FUSEGRAPH_GPTQ_CUDA=0` turns the path off.

Launches go to torch's current stream and allocate only through torch (the split-K workspace of
the ticket reduction), so they can be captured in CUDA graphs once the kernel is compiled (the
first eager call compiles it; a compile during capture is refused and falls back).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import triton

from fusegraph.runtime.kernels.gptq_cuda_launch import KernelCache, launch
from fusegraph.runtime.kernels.gptq_cuda_mid import (
    MID_KERNEL_NAME,
    MidSpec,
    mid_kernel_source,
    mid_smem_bytes,
)
from fusegraph.runtime.kernels.gptq_cuda_permute import permute_rows
from fusegraph.runtime.kernels.gptq_cuda_specs import (
    PLAN_KEYS,
    launch_plan,
    mid_m_spec,
    small_m_spec,
    takes_mid,
    wgmma_config,
)
from fusegraph.runtime.kernels.gptq_cuda_src import KERNEL_NAME, KernelSpec, kernel_source, smem_bytes
from fusegraph.runtime.kernels.gptq_cuda_wgmma import maybe_wgmma
from fusegraph.runtime.kernels.gptq_plan import cuda_plan
from fusegraph.runtime.kernels.gptq_tiled_kernels import _permute_cols_kernel
from fusegraph.runtime.kernels.pdl import gemm_chain
from fusegraph.runtime.kernels.tensor_cache import zeroed_tickets

__all__ = ["cuda_path_status", "gptq_cuda_matmul", "group_rows", "maybe_gptq_cuda"]

_log = logging.getLogger(__name__)

_CACHE: KernelCache[tuple[int, KernelSpec | MidSpec]] = KernelCache()  # by (device index, spec)
_KERNELS, _FAILED = _CACHE.kernels, _CACHE.failed
_STATUS: dict[str, str] = {}
_SM: dict[torch.device, tuple[int, tuple[int, int]]] = {}
_CUDA_KEYS = {"kernel", "cuda", "wgmma", *PLAN_KEYS}  # "wgmma": gptq_cuda_wgmma


def _device_info(device: torch.device) -> tuple[int, tuple[int, int]]:
    if device not in _SM:
        props = torch.cuda.get_device_properties(device)
        _SM[device] = (props.multi_processor_count, (props.major, props.minor))
    return _SM[device]


def cuda_path_status() -> str:
    """Which path small-M GPTQ matmuls take in this process and, if Triton, why.

    Example:
        >>> cuda_path_status()
        'cuda: not used yet'
    """
    if os.environ.get("FUSEGRAPH_GPTQ_CUDA", "1") == "0":
        return "triton: FUSEGRAPH_GPTQ_CUDA=0"
    if "error" in _STATUS:
        return f"triton: {_STATUS['error']}"
    if not hasattr(torch.cuda, "_compile_kernel"):
        return "triton: this torch has no torch.cuda._compile_kernel (NVRTC)"
    if _KERNELS:
        return f"cuda: {len(_KERNELS)} compiled kernel(s)"
    return "cuda: not used yet"


def _kernel(spec: KernelSpec | MidSpec, device: torch.device, smem: int) -> Any | None:
    """The compiled kernel of `spec` on `device` (compiled once), or None (reason in `_FAILED`)."""
    key = (device.index or 0, spec)
    if key not in _KERNELS and key not in _FAILED and torch.cuda.is_current_stream_capturing():
        _FAILED[key] = "not compiled before CUDA-graph capture"
    failed_before = key in _FAILED

    def build() -> Any:
        with torch.cuda.device(device):
            if isinstance(spec, MidSpec):
                return torch.cuda._compile_kernel(mid_kernel_source(spec), MID_KERNEL_NAME)
            return torch.cuda._compile_kernel(kernel_source(spec), KERNEL_NAME)

    kern = _CACHE.get(key, build, smem)
    if kern is None and not failed_before:  # it failed to compile just now
        _STATUS["error"] = f"compiling {spec} failed: {_FAILED[key]}"
        _log.warning(
            "gptq_cuda: the CUDA kernel is not available, Triton runs instead (%s)", _STATUS["error"]
        )
    return kern


def _counters(device: torch.device, n: int) -> torch.Tensor:
    """Zeroed int32 tickets, one per strip; each launch leaves them zeroed again."""
    return zeroed_tickets("gptq cuda split-k", device, n)


def _unsupported(x: torch.Tensor, qweight_t: torch.Tensor, scales: torch.Tensor, qzeros_t: torch.Tensor,
                 perm: torch.Tensor | None, bits: int) -> str | None:  # fmt: skip
    """Why the CUDA kernel cannot take these operands, or None."""
    if x.device.type != "cuda":
        return "not a CUDA tensor"
    if x.dtype not in (torch.float16, torch.bfloat16) or scales.dtype != x.dtype:
        return f"x {x.dtype} / scales {scales.dtype}: needs fp16 or bf16, the same for both"
    if x.dtype == torch.bfloat16 and bits == 8:
        return "bf16 at 8 bits"
    cap = _device_info(x.device)[1]
    if (cap < (9, 0) and x.dtype == torch.bfloat16) or cap < (8, 0):
        return f"compute capability {cap}"
    aligned = {"x": (x, 16), "qweight": (qweight_t, 16), "scales": (scales, 8), "qzeros": (qzeros_t, 4)}
    if perm is not None:
        aligned["perm"] = (perm, 16)
    for name, (t, align) in aligned.items():
        if t.data_ptr() % align:
            return f"{name} not {align}-byte aligned"
    if x.stride(0) % 8:
        return "x's row stride is not a multiple of 8"
    return None


def group_rows(group_size: int, k: int, caller: str) -> int:
    """The rows of a group (K for group_size -1), or a ValueError naming `caller` where the kernels cannot step
    through them: they must be a positive multiple of 128 dividing K (the mid-M kernel steps a group at a time, so a
    size of 0 or below would never end).

    Example:
        >>> group_rows(-1, 4096, "f"), group_rows(256, 4096, "f")
        (4096, 256)
    """
    rows = k if group_size == -1 else group_size
    if rows <= 0 or rows % 128 or k % rows:
        raise ValueError(
            f"{caller}: group_size {group_size} must be -1 or a positive multiple of 128 dividing K = {k}"
        )
    return rows


def gptq_cuda_matmul(
    x: torch.Tensor,
    qweight_t: torch.Tensor,
    scales: torch.Tensor,
    qzeros_t: torch.Tensor,
    perm: torch.Tensor | None,
    *,
    bits: int,
    group_size: int,
    zero_format: str,
    plan: dict[str, Any],
) -> torch.Tensor | None:
    """`x @ W` with the CUDA kernel and `plan` ({"split_k", "warps", "cluster", "min_blocks", "l2pf", "tma", "mid"}), or None
    when the kernel cannot be compiled here. M > 16 (or "mid": True) runs the mid-M kernel
    (`gptq_cuda_mid.py`: "warps" is then its 64-column strips per CTA; "l2pf"/"tma" do not apply; with
    perm, "perm_ahead" gathers block u+1 of x before block u's math; in the small-M kernel it gathers x's
    slice column-chunk major, loads ahead). Operands as in `gptq_tiled_matmul`, already checked
    there (contiguous, K % 128 == 0, group_size a multiple of 128 dividing K).

    Example:
        >>> y = gptq_cuda_matmul(x, t["qweight"], scales, t["qzeros"], None, bits=4, group_size=128,
        ...                      zero_format="v1", plan={"split_k": 4, "warps": 4, "cluster": False})
    """
    m, k = x.shape
    group_rows(group_size, k, "gptq_cuda_matmul")
    blocks = k // 128
    split = int(plan["split_k"])
    if blocks % split:
        raise ValueError(f"gptq_cuda_matmul: split_k {split} must divide K/128 = {blocks}")
    bps = blocks // split
    kind: dict[str, Any] = {"bits": bits, "bf16": x.dtype == torch.bfloat16, "has_perm": perm is not None,
                            "zero_v1": zero_format == "v1", "cap": _device_info(x.device)[1]}  # fmt: skip
    if takes_mid(plan, m):
        return _mid_matmul(x, qweight_t, scales, qzeros_t, perm, group_size=group_size, plan=plan, bps=bps,
                           kind=kind)  # fmt: skip
    spec = small_m_spec(plan, m=m, bps=bps, **kind)
    return _launch(spec, smem_bytes(spec, m, bps), 1, x, qweight_t, scales, qzeros_t, perm, group_size, bps)


def _mid_matmul(x: torch.Tensor, qweight_t: torch.Tensor, scales: torch.Tensor, qzeros_t: torch.Tensor,
                perm: torch.Tensor | None, *, group_size: int, plan: dict[str, Any], bps: int,
                kind: dict[str, Any]) -> torch.Tensor | None:  # fmt: skip
    """The mid-M kernel's launch (`gptq_cuda_matmul` checked split_k and computed bps; `kind`: `mid_m_spec`'s
    bits, bf16, has_perm, zero_v1 and cap)."""
    m, k = x.shape
    n = qweight_t.shape[0] * 64
    warps = int(plan["warps"])
    if m > 64:
        raise ValueError(f"gptq_cuda_matmul: the mid-M kernel takes M ≤ 64, got M={m}")
    if n % (64 * warps):
        raise ValueError(
            f"gptq_cuda_matmul: warps {warps} (64-column strips a CTA) must divide N/64 = {n // 64}"
        )
    spec = mid_m_spec(plan, m=m, **kind)
    return _launch(
        spec, mid_smem_bytes(spec, m, bps), warps, x, qweight_t, scales, qzeros_t, perm, group_size, bps
    )


def _launch(spec: KernelSpec | MidSpec, smem: int, strips: int, x: torch.Tensor, qweight_t: torch.Tensor,
            scales: torch.Tensor, qzeros_t: torch.Tensor, perm: torch.Tensor | None, group_size: int,
            bps: int) -> torch.Tensor | None:  # fmt: skip
    """Launch `spec` (compiled on first use; None if it cannot be) over CTAs of `strips` 64-column strips
    and `bps` 128-row blocks of K, with `smem` bytes of shared memory (refused past the GPU's limit), and
    the split-K workspace and tickets where the slices do not meet in a cluster."""
    m, k = x.shape
    n = qweight_t.shape[0] * 64
    limit = getattr(torch.cuda.get_device_properties(x.device), "shared_memory_per_block_optin", 227 * 1024)
    if smem > limit:
        raise ValueError(
            f"gptq_cuda_matmul: {spec} at M={m} needs {smem} B of shared memory, the GPU has {limit}"
        )
    kern = _kernel(spec, x.device, smem)
    if kern is None:
        return None
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    ticket = spec.split > 1 and not spec.cluster
    ws = torch.empty((spec.split, m, n), dtype=torch.float32, device=x.device) if ticket else out
    cnt = _counters(x.device, n // (64 * strips)) if ticket else out
    launch(kern, (n // (64 * strips), spec.split, 1), (32 * spec.warps, 1, 1), smem,
           [x, qweight_t, scales, qzeros_t, qweight_t if perm is None else perm, out, ws, cnt, m, n, k,
            k if group_size == -1 else group_size, bps, x.stride(0), scales.stride(0), qzeros_t.stride(0),
            out.stride(0)], pdl=spec.pdl or spec.chain)  # fmt: skip
    return out


def _permute_x(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """x[:, perm] as a new contiguous tensor in one launch: `fg_permute_rows` (`gptq_cuda_permute.py`: rows
    staged in shared memory, and it lets a kernel launched after it with PDL start at once), or the Triton
    permutation kernel where that cannot run (K past its limit; not compiled before CUDA-graph capture)."""
    y = permute_rows(x, perm, _device_info(x.device)[0]) if perm.dtype == torch.int32 else None
    if y is not None:
        return y
    m, k = x.shape
    y = torch.empty((m, k), dtype=x.dtype, device=x.device)
    block = min(1024, triton.next_power_of_2(k))
    _permute_cols_kernel[(triton.cdiv(k, block), m)](x, perm, y, k, x.stride(0), BLOCK=block, num_warps=4)
    return y


def maybe_gptq_cuda(
    x: torch.Tensor,
    qweight_t: torch.Tensor,
    scales: torch.Tensor,
    qzeros_t: torch.Tensor,
    perm: torch.Tensor | None,
    *,
    bits: int,
    group_size: int,
    zero_format: str,
    config: dict[str, Any] | None,
) -> torch.Tensor | None:
    """The CUDA kernel's `x @ W` when the plan takes this call, else None (the caller runs Triton).

    `config` as in `gptq_tiled_matmul`: {"kernel": "cuda", "split_k", "warps", "cluster", "min_blocks", "l2pf",
    "tma", "mid", "xperm", "perm_ahead", "bufs", "xperm_pdl", "xfull", "fold", "sfold", "cpa", "early"} forces it (a
    ValueError if it cannot run); a config with only those keys (no "kernel") adjusts the plan where it takes the
    call; {"cuda": False} or any Triton key skips it;
    "wgmma": True asks for the Hopper wgmma kernel (with its own keys, `gptq_cuda_wgmma.maybe_wgmma`).
    Act-order past `gptq_plan._CUDA_ACT_GATHER_MAX_M` ("xperm": True forces it, False the in-kernel
    gather): x is permuted once (`_permute_x`; "xperm_pdl": the kernel launched with programmatic
    dependent launch after it), then the kernel runs on the row-sorted weight without perm.
    """
    cfg = config or {}
    forced = cfg.get("kernel") == "cuda"
    hopper_asked = bool(cfg.get("wgmma"))  # their own keys too; they check their operands
    if (not forced and not hopper_asked and (cfg.keys() - _CUDA_KEYS or cfg.get("cuda") is False)) or (
        x.device.type != "cuda"
    ):
        return None  # a Triton option or kernel was asked for
    if not forced and os.environ.get("FUSEGRAPH_GPTQ_CUDA", "1") == "0":
        return None
    m, k = x.shape
    n = qweight_t.shape[0] * 64
    if x.device.type == "cuda" and (x.data_ptr() % 16 or x.stride(0) % 8):
        x = x.clone(memory_format=torch.contiguous_format)  # the kernel copies x in 16-byte chunks
    sms, cap = _device_info(x.device)
    why = _unsupported(x, qweight_t, scales, qzeros_t, perm, bits)
    plan = None
    if why is None or hopper_asked:
        plan = cuda_plan(m, n, k, bits, sms, act_order=perm is not None, bf16=x.dtype == torch.bfloat16,
                         forced=forced, mid=cfg.get("mid"), xperm=cfg.get("xperm"), wgmma=cfg.get("wgmma"),
                         cap=cap, configured=bool(cfg))  # fmt: skip
        why = why or (None if plan is not None else f"no plan for M={m} N={n} K={k} bits={bits}")
    if plan is not None and plan["kernel"] == "wgmma":  # the Hopper kernels (raise if asked, unable)
        if perm is not None and why is None:  # act-order: x permuted once (one launch), the row-sorted weight
            x, perm = _permute_x(x, perm), None
        elif not cfg:  # the chain (`pdl.py`): L2 prefetches before the wait
            plan = wgmma_config(plan, chained=bool(gemm_chain(x.device)))
        try:
            return maybe_wgmma(x, qweight_t, scales, qzeros_t, perm, bits=bits, group_size=group_size,
                               zero_format=zero_format, config=cfg or plan, sms=sms)  # fmt: skip
        except RuntimeError:  # by default only: not compiled here (logged once), the Triton kernels run
            if cfg:
                raise
            return None
    if plan is None:
        if forced:
            raise ValueError(f"gptq_tiled_matmul: kernel 'cuda' cannot run: {why}")
        return None
    # the runtime's chain (`pdl.py`: only L2 prefetches before the wait; `launch_plan` drops it for a config's "chain")
    plan, permute_x = launch_plan(plan, cfg, act_order=perm is not None, chain=gemm_chain(x.device), cap=cap)
    if (
        perm is not None and permute_x
    ):  # act-order: x sorted once, then the plain kernel on the row-sorted weight
        x, perm = _permute_x(x, perm), None
    y = gptq_cuda_matmul(x, qweight_t, scales, qzeros_t, perm, bits=bits, group_size=group_size,
                         zero_format=zero_format, plan=plan)  # fmt: skip
    if y is None and forced:
        raise ValueError(f"gptq_tiled_matmul: kernel 'cuda' cannot run: {cuda_path_status()}")
    return y
