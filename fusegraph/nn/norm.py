"""`RMSNorm`: `x / sqrt(mean(x², -1) + eps) · weight` over the last dim (HF Llama/Qwen3)."""

from __future__ import annotations

import math

from fusegraph import ops
from fusegraph.compiler import DeviceRef, DType, TensorValue
from fusegraph.nn.layer import Module


class RMSNorm(Module):
    """RMS normalization with a learned `weight` `[dim]` (HF name `weight`).

    Args:
        dim: Size of the normalized (last) dim.
        dtype: Weight type.
        eps: Added to the mean square.
        device: Where the weight lives (default CPU).

    Raises:
        ValueError: `dim` is not a positive int, or `eps` is not finite and >= 0.

    Example:
        >>> norm = RMSNorm(16, DType.float32, eps=1e-6)
        >>> y = norm(x)          # x [..., 16], inside `with Graph(...)`
    """

    def __init__(
        self, dim: int, dtype: DType = DType.float32, eps: float = 1e-6, device: DeviceRef | None = None
    ) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"RMSNorm: dim must be a positive int, got {dim!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
            raise ValueError(f"RMSNorm: eps must be a finite float >= 0, got {eps!r}")
        device = device if device is not None else DeviceRef.CPU()
        self.dim, self.eps = dim, float(eps)
        self._declare("weight", [dim], dtype, device)

    def __call__(self, x: TensorValue) -> TensorValue:
        """Normalize `x` over its last dim (`fg.rms_norm`)."""
        return ops.rms_norm(x, self.weight("weight"), self.eps)
