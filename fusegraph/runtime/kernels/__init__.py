"""Triton kernels, registered as the CUDA implementations of fusegraph's torch.library ops.

| op                             | kernel                                        |
|--------------------------------|-----------------------------------------------|
| `fusegraph::rope_split_store_` | `rope_split_store.rope_split_store_triton`     |
| `fusegraph::kv_cache_store_`   | `kv_cache_store.kv_cache_store_triton`         |
| `fusegraph::qmatmul_gptq`      | `gptq_matmul.gptq_matmul_triton` (2/4/8 bits)  |
| `fusegraph::qmatmul_gptq_tiled`| `gptq_tiled.gptq_tiled_matmul` (2/3/4/8 bits)  |
| `fusegraph::paged_attention`   | `paged_attention.paged_attention_triton`       |
| `fusegraph::rms_norm`          | `rms_norm.rms_norm_cuda` (optional perm)       |
| `fusegraph::add_rms_norm`      | `rms_norm.add_rms_norm_cuda` (residual + norm) |
| `fusegraph::silu_mul`          | `silu_mul.silu_mul_cuda` (stacked or two)      |

Importing this package registers them (`fusegraph.runtime.eager` does so for device="cuda").
Registration is safe without a GPU: the kernels only run when the op sees CUDA tensors. An
op that is not defined is skipped with a log line. The kernel modules import only torch and
triton, so they can also be loaded on their own (the GPU benchmark does).

The cache-writing kernels need no host sync to stay safe: a row whose page is past its lookup
row or names a block past num_blocks writes nothing, and the eager runtime's one-launch check
(`write_flag.py`, first in every step) sets a per-cache device flag on an overflow, which makes
them write nothing at all; the runtime raises at its next call (`runtime/write_guard.py`).
GPTQ at 3 bits runs the aten decomposition.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from fusegraph.runtime.kernels.gptq_matmul import gptq_matmul_triton
from fusegraph.runtime.kernels.gptq_tiled import gptq_tiled_matmul
from fusegraph.runtime.kernels.kv_cache_store import kv_cache_store_triton
from fusegraph.runtime.kernels.paged_attention import paged_attention_triton
from fusegraph.runtime.kernels.rms_norm import add_rms_norm_cuda, rms_norm_cuda
from fusegraph.runtime.kernels.rope_split_store import rope_split_store_triton
from fusegraph.runtime.kernels.silu_mul import silu_mul_cuda
from fusegraph.runtime.kernels.tensor_cache import UNSEEN, derived

__all__ = [
    "REGISTERED",
    "gptq_matmul_triton",
    "kv_cache_store_triton",
    "paged_attention_triton",
    "rope_split_store_triton",
]

_log = logging.getLogger(__name__)

REGISTERED: dict[str, Callable[..., Any]] = {}
"""Op name -> the CUDA function registered for it in this process."""


def _g_idx_is_trivial(g_idx: torch.Tensor, group_size: int) -> bool:
    """Whether g_idx is k // group_size (what desc_act=False checkpoints store), cached per tensor
    (`tensor_cache.derived`).

    The op carries g_idx whenever the checkpoint has one, and a trivial one lets the kernel use
    per-tile scales (several times faster). The first look costs one host sync, so it is made
    outside CUDA-graph capture (the runtime warms up first); during capture an unseen tensor
    counts as act-order, which is always correct.
    """

    def build() -> bool:
        k = g_idx.numel()
        rows = torch.arange(k, device=g_idx.device) // (k if group_size == -1 else group_size)
        return bool(torch.equal(g_idx.to(torch.int64), rows))

    trivial = derived("g_idx is trivial", (g_idx,), build, extra=group_size)
    return trivial is not UNSEEN and trivial


def _qmatmul_gptq_cuda(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    qzeros: torch.Tensor | None,
    g_idx: torch.Tensor | None,
    bits: int,
    group_size: int,
    sym: bool,
    zero_format: str,
    clip: float | None,
) -> torch.Tensor:
    if bits not in (2, 4, 8):  # 3-bit values straddle words: the aten decomposition handles them
        from fusegraph.ops.gptq_packing import qmatmul_decomposed

        return qmatmul_decomposed(
            x, qweight, scales, qzeros, g_idx, bits=bits, group_size=group_size, sym=sym,
            zero_format=zero_format, clip=clip,
        )  # fmt: skip
    desc_act = None if g_idx is None else not _g_idx_is_trivial(g_idx, group_size)
    return gptq_matmul_triton(
        x, qweight, scales, qzeros, g_idx, bits=bits, group_size=group_size, sym=sym,
        zero_format=zero_format, clip=clip, desc_act=desc_act,
    )  # fmt: skip


def _qmatmul_gptq_tiled_cuda(
    x: torch.Tensor,
    qweight_t: torch.Tensor,
    scales: torch.Tensor,
    qzeros_t: torch.Tensor,
    perm: torch.Tensor | None,
    bits: int,
    group_size: int,
    zero_format: str,
) -> torch.Tensor:
    return gptq_tiled_matmul(
        x, qweight_t, scales, qzeros_t, perm, bits=bits, group_size=group_size, zero_format=zero_format
    )


# The Triton functions take the ops' schema arguments in schema order, so two register directly.
_KERNELS: dict[str, Callable[..., Any]] = {
    "fusegraph::rope_split_store_": rope_split_store_triton,
    "fusegraph::kv_cache_store_": kv_cache_store_triton,
    "fusegraph::qmatmul_gptq": _qmatmul_gptq_cuda,
    "fusegraph::qmatmul_gptq_tiled": _qmatmul_gptq_tiled_cuda,
    "fusegraph::paged_attention": paged_attention_triton,
    "fusegraph::rms_norm": rms_norm_cuda,
    "fusegraph::add_rms_norm": add_rms_norm_cuda,
    "fusegraph::silu_mul": silu_mul_cuda,
}


def register_cuda_kernels() -> dict[str, Callable[..., Any]]:
    """Register every kernel whose op is defined; skip (and log) the others. Idempotent."""
    try:
        import fusegraph.ops  # noqa: F401 - defines the torch.library ops
    except ImportError as err:  # the kernels stay usable as plain functions
        _log.warning("fusegraph kernels: ops not importable (%s); no CUDA kernels registered", err)
        return REGISTERED
    for name, fn in _KERNELS.items():
        if name in REGISTERED:
            continue
        try:
            torch.library.register_kernel(name, "cuda", fn)
        except (RuntimeError, ValueError, AttributeError) as err:
            _log.warning(
                "fusegraph kernels: %s is not defined, its CUDA kernel is not registered (%s)", name, err
            )
            continue
        REGISTERED[name] = fn
    return REGISTERED


register_cuda_kernels()
