"""Programmatic dependent launch (PDL, Hopper) through the eager runtime's kernels: the chain.

A decode step is a few hundred short kernels, each waiting for the one before to finish before its
first CTA starts. With PDL a kernel may launch while the one before still runs, do work that reads
nothing the earlier kernels write, and wait (`griddepcontrol.wait`) for them before the rest:

- the GPTQ kernels (`gptq_cuda.py`'s small-M and mid-M kernels, spec fields `chain` and `chain_l2`; the
  wgmma kernel, plan key "pdl") ask L2 for their first weight blocks before the wait: L2 is coherent, so nothing
  they read later can be stale, whoever wrote the weights;
- the small-M kernel, and the mid-M kernel where a thread may hold more than 128 registers
  (`gptq_cuda_specs.mid_early_fits`), also load their first blocks' words and zeros into registers (or a cp.async
  ring) before the wait (plan key "early", `FUSEGRAPH_PDL_EARLY`, default 1; 2 the mid-M kernel in every plan; spec
  field `pdl`). These are int32 tensors of
  `fg.gptq.repack`, which no kernel of the chain writes: the chain's kernels write float activations, the KV
  cache and their own tickets and workspaces. A kernel outside the chain never lets the next one launch early, so
  a PDL launch after it starts only once it has ended. The scales, a float weight that a graph could compute, are
  only asked of L2 before the wait and loaded after it. (H200, chained: o_proj M=1 5.27 against 5.66 µs, 8-bit
  6.92 against 7.59; the 32-layer decode step at batch 1 about 1% faster. In the mid-M kernel qkv M=4 6.76-6.91
  against 6.99-7.10, 8 bits 9.38 against 9.69, M=1 unchanged; at 128 registers it lost, gate_up M=1 18.8 against
  18.4, so gate_up's plan keeps L2 prefetches only);
- the Triton kernels around them (RMSNorm, rope-split-store, paged attention and its split combine,
  silu·mul) and the act-order permutation of x are, at mode 2, PDL launches themselves that wait before
  their first load (the RMSNorm asks L2 for its weight's lines first, `pdl_prefetch_l2`);
- every kernel of the chain lets the kernel after it launch (`griddepcontrol.launch_dependents`) once it
  is past its own wait (at its start where it waits for nothing), so one kernel at most waits ahead of the
  one that runs. A trigger before the wait let a run of short kernels all launch at once, each one's
  prefetches competing with the running kernel's loads (H200: down at M=16 27.8 µs against 20.6 unchained).

Every kernel launched with PDL waits before its first read of anything an earlier kernel writes and
before its first write, so a chain keeps stream order for memory: each kernel sees the writes of all
kernels before it, and none writes what an earlier one still reads.

`FUSEGRAPH_PDL` picks the mode: 0 off; 1 the GPTQ kernels are PDL launches and the Triton kernels let
them start early; 2 (the default) also the Triton kernels are PDL launches. `FUSEGRAPH_PDL_L2` sets the
weight blocks a warp of the small- and mid-M kernels prefetches before its wait (default 1); `FUSEGRAPH_PDL_EARLY`
0 keeps every kernel's words after its wait. Off where the GPU is not
sm_90+ or Triton has no `gdc_*` (`triton.language.extra.cuda`).

Example:
    >>> pdl_mode(torch.device("cpu"))
    0
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
import triton
import triton.language as tl

try:  # Triton's grid-dependency control (PDL) intrinsics
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # pragma: no cover - an older Triton: the chain is off
    gdc_launch_dependents = gdc_wait = None

__all__ = ["chain_error", "gemm_chain", "pdl_enter", "pdl_mode", "pdl_prefetch_l2", "triton_pdl"]

_CAP: dict[torch.device, tuple[int, int]] = {}
# the weight blocks (128 rows of a 64-column strip) each warp of a GPTQ kernel asks L2 for before its wait
_CHAIN_BLOCKS = 1


def pdl_mode(device: torch.device) -> int:
    """The chain's mode on `device` (see the module): 0 off, 1 the GPTQ kernels only, 2 every kernel."""
    if device.type != "cuda" or gdc_wait is None or torch.version.hip:  # griddepcontrol: NVIDIA sm_90+ only
        return 0
    if device not in _CAP:
        _CAP[device] = torch.cuda.get_device_capability(device)
    if _CAP[device] < (9, 0):
        return 0
    mode = os.environ.get("FUSEGRAPH_PDL", "2")
    if mode not in ("0", "1", "2"):
        raise ValueError(f"FUSEGRAPH_PDL must be 0, 1 or 2, got {mode!r}")
    return int(mode)


def gemm_chain(device: torch.device) -> dict[str, Any]:
    """The small- and mid-M GPTQ kernels' plan keys on `device`: {"chain": True, "chain_l2": the weight blocks a
    warp asks L2 for before its wait (`FUSEGRAPH_PDL_L2`, default 1), "early": which kernels load their first
    blocks' words before it (`FUSEGRAPH_PDL_EARLY`: 0 none, 1 (the default) the small-M kernel and the mid-M one
    where `gptq_cuda_specs.mid_early_fits`, 2 both always)}, or {} with the chain off."""
    if pdl_mode(device) == 0:
        return {}
    blocks = os.environ.get("FUSEGRAPH_PDL_L2", str(_CHAIN_BLOCKS))
    if not blocks.isdigit() or int(blocks) > 64:
        raise ValueError(f"FUSEGRAPH_PDL_L2 must be 0..64 (weight blocks a warp prefetches), got {blocks!r}")
    early = os.environ.get("FUSEGRAPH_PDL_EARLY", "1")
    if early not in ("0", "1", "2"):
        raise ValueError(
            f"FUSEGRAPH_PDL_EARLY must be 0, 1 or 2 (which kernels load words before the wait), got {early!r}"
        )
    return {"chain": True, "chain_l2": int(blocks), "early": int(early)}


def chain_error(chain: bool, chain_l2: int, pdl: bool) -> str | None:
    """Why a GPTQ kernel spec's chain fields are wrong, or None (its `__post_init__` raises the reason).

    Example:
        >>> chain_error(True, 1, pdl=True)
        'chain_l2 must be 0..64 blocks and chain not with pdl, got 1'
    """
    if 0 <= chain_l2 <= 64 and not (chain and pdl):
        return None
    return f"chain_l2 must be 0..64 blocks and chain not with pdl, got {chain_l2}"


@functools.cache
def _triton_launches_pdl() -> bool:
    """Whether this Triton launches a kernel with PDL (its `launch_pdl` option)."""
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:  # pragma: no cover - no NVIDIA backend
        return False
    return "launch_pdl" in getattr(CUDAOptions, "__dataclass_fields__", {})


def triton_pdl(device: torch.device) -> dict[str, Any]:
    """The launch options of a Triton kernel of the chain on `device`: its `PDL` constexpr (for `pdl_enter`)
    and, at mode 2, `launch_pdl`.

    A kernel takes them as `_kernel[grid](x, y, n, BLOCK=1024, **triton_pdl(x.device))`.

    Example:
        >>> triton_pdl(torch.device("cpu"))  # no chain off the GPU
        {'PDL': 0}
    """
    mode = pdl_mode(device)
    if mode == 2 and _triton_launches_pdl():
        return {"PDL": 2, "launch_pdl": True}
    return {"PDL": min(mode, 1)}


@triton.jit
def pdl_enter(PDL: tl.constexpr):  # noqa: N803 - Triton's constexpr convention
    """A Triton kernel's first statement in the chain: PDL 2 (a PDL launch itself) waits for the kernels before
    it, before any load or store; then PDL ≥ 1 lets the kernel after it launch. After the wait, so that at most
    one kernel waits ahead of the one that runs (a trigger before it let a whole chain of short kernels launch at
    once, each one's L2 prefetches competing with the running kernel's loads)."""
    if PDL >= 2:
        gdc_wait()
    if PDL >= 1:
        gdc_launch_dependents()


@triton.jit
def pdl_prefetch_l2(ptr, start, N: tl.constexpr, D, PDL: tl.constexpr):  # noqa: N803 - Triton's constexpr convention
    """Ask L2 for the lines of `ptr[start : start + N]` (the part below D) before `pdl_enter`'s wait, in a kernel
    that is a PDL launch itself (PDL 2), so that it starts while the kernel before it runs: for operands that no
    kernel writes (weights), which its first load after the wait would otherwise bring from HBM. An L2 prefetch is
    the only read the chain allows before the wait (L2 is coherent: nothing read later is stale)."""
    if PDL >= 2:
        if N >= 32:  # noqa: SIM108 - a constexpr branch: tl.arange(0, 0) must not be built
            # every 32nd element: 4-byte ones are 128 bytes apart, one a line
            cols = start + tl.arange(0, N // 32) * 32
        else:
            cols = start + tl.arange(0, N)
        tl.inline_asm_elementwise(
            "prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;",
            "=r,l",
            [ptr + tl.where(cols < D, cols, 0)],
            dtype=tl.int32,
            is_pure=False,
            pack=1,
        )
