"""Triton kernels, registered as the CUDA implementations of fusegraph's torch.library ops.

| op                             | kernel                                        |
|--------------------------------|-----------------------------------------------|
| `fusegraph::rope_split_store_` | `rope_split_store.rope_split_store_triton`     |
| `fusegraph::qmatmul_gptq`      | `gptq_matmul.gptq_matmul_triton` (2/4/8 bits)  |
| `fusegraph::paged_attention`   | `paged_attention.paged_attention_triton`       |

Importing this package registers them (`fusegraph.runtime.eager` does so for device="cuda").
Registration is safe without a GPU: the kernels only run when the op sees CUDA tensors. An
op that is not defined is skipped with a log line. The kernel modules import only torch and
triton, so they can also be loaded on their own (the GPU benchmark does).

What the kernels leave to the torch implementations: bounds checks of the metadata
(positions beyond a sequence's pages), which would need a host sync, and GPTQ at 3 bits,
which runs the aten decomposition.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from fusegraph.runtime.kernels.gptq_matmul import gptq_matmul_triton
from fusegraph.runtime.kernels.paged_attention import paged_attention_triton
from fusegraph.runtime.kernels.rope_split_store import rope_split_store_triton

__all__ = ["REGISTERED", "gptq_matmul_triton", "paged_attention_triton", "rope_split_store_triton"]

_log = logging.getLogger(__name__)

REGISTERED: dict[str, Callable[..., Any]] = {}
"""Op name -> the CUDA function registered for it in this process."""


def _rope_split_store_cuda(
    qkv: torch.Tensor,
    input_row_offsets: torch.Tensor,
    freqs_cis: torch.Tensor,
    kv_blocks: torch.Tensor,
    cache_lengths: torch.Tensor,
    lookup_table: torch.Tensor,
    layer_idx: int,
    interleaved: bool,
    n_heads: int,
    n_kv_heads: int,
    head_dim: int,
) -> torch.Tensor:
    return rope_split_store_triton(
        qkv, input_row_offsets, freqs_cis, kv_blocks, cache_lengths, lookup_table, layer_idx=layer_idx,
        interleaved=interleaved, n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim,
    )  # fmt: skip


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
    return gptq_matmul_triton(
        x, qweight, scales, qzeros, g_idx, bits=bits, group_size=group_size, sym=sym,
        zero_format=zero_format, clip=clip,
    )  # fmt: skip


def _paged_attention_cuda(
    q: torch.Tensor,
    input_row_offsets: torch.Tensor,
    kv_blocks: torch.Tensor,
    cache_lengths: torch.Tensor,
    lookup_table: torch.Tensor,
    layer_idx: int,
    scale: float,
    sliding_window: int | None,
) -> torch.Tensor:
    return paged_attention_triton(
        q, input_row_offsets, kv_blocks, cache_lengths, lookup_table, layer_idx=layer_idx, scale=scale,
        sliding_window=sliding_window,
    )  # fmt: skip


_KERNELS: dict[str, Callable[..., Any]] = {
    "fusegraph::rope_split_store_": _rope_split_store_cuda,
    "fusegraph::qmatmul_gptq": _qmatmul_gptq_cuda,
    "fusegraph::paged_attention": _paged_attention_cuda,
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
