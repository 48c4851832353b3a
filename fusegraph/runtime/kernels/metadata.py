"""Host-side preparation of the ragged metadata tensors the Triton kernels load."""

from __future__ import annotations

import torch

__all__ = ["as_index"]


def as_index(t: torch.Tensor) -> torch.Tensor:
    """Metadata as a contiguous integer tensor a kernel can load (uint32, int32 and int64 pass as is).

    Example:
        >>> as_index(torch.tensor([0.0, 3.0])).dtype
        torch.int64
    """
    if t.dtype not in (torch.int32, torch.int64, torch.uint32):
        t = t.to(torch.int64)
    return t if t.is_contiguous() else t.contiguous()
