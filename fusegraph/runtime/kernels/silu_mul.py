"""Triton kernel for `fusegraph::silu_mul` (`fg.silu_mul`): `silu(gate) * up` in one launch.

The unfused form is two kernels on CUDA (silu, then mul; a stacked gate_up's split is views), so
`[M, I]` makes an extra round trip through memory (silu's output written, then read back); this
one reads gate and up once and writes y once. With one operand `x [M, 2I]` the halves are read
in place (gate columns first). As the unfused ops do, it rounds silu (float32) to the dtype and
then the product (float32) again, so fused equals unfused up to the exp's last bit. A program
does BLOCK columns of one row; no host sync, so it can be captured in a CUDA graph.
"""

# ruff: noqa: N803 - Triton's convention: constexpr parameters are UPPER_CASE
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fusegraph.runtime.kernels.pdl import pdl_enter, triton_pdl

__all__ = ["silu_mul_cuda", "silu_mul_rows"]

BLOCK = 1024
_OP = "fg.silu_mul"
_FLOATS = (torch.float16, torch.bfloat16, torch.float32)


@triton.jit
def _silu_mul_kernel(g_ptr, u_ptr, y_ptr, n_cols, stride_g, stride_u, BLOCK: tl.constexpr, PDL: tl.constexpr):
    pdl_enter(PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < n_cols
    g = tl.load(g_ptr + row * stride_g + cols, mask=ok, other=0.0)
    u = tl.load(u_ptr + row * stride_u + cols, mask=ok, other=0.0)
    gf = g.to(tl.float32)
    s = (gf / (1.0 + tl.exp(-gf))).to(g.dtype)  # fg.silu's result, in the dtype
    y = (s.to(tl.float32) * u.to(tl.float32)).to(y_ptr.dtype.element_ty)  # fg.mul's
    tl.store(y_ptr + row * n_cols + cols, y, mask=ok)


def _rows(t: torch.Tensor, what: str) -> torch.Tensor:
    """`t` as `[M, C]` rows with unit column stride (a copy only when it has none)."""
    if t.dtype not in _FLOATS:
        raise ValueError(f"{_OP}: {what} dtype must be float16, bfloat16 or float32, got {t.dtype}")
    if t.dim() < 1:
        raise ValueError(f"{_OP}: {what} must have rank >= 1, got a scalar")
    t2 = t.reshape(-1, t.shape[-1])
    return t2 if t2.shape[-1] <= 1 or t2.stride(1) == 1 else t2.contiguous()


def silu_mul_rows(gate: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """`silu(gate) * up` (or of gate's halves `[..., 2I]` when `up` is None) in one launch.

    Args:
        gate: `[..., I]` float16/bfloat16/float32, or `[..., 2I]` without `up`.
        up: gate's shape and dtype, or None.

    Returns:
        A new contiguous `[..., I]` tensor of gate's dtype.

    Raises:
        ValueError: a dtype, device or shape mismatch, naming `fg.silu_mul` and the operand.

    Example:
        >>> y = silu_mul_rows(gate_up)       # [T, 2I] fp16 -> [T, I]
    """
    g2 = _rows(gate, "gate")
    if up is None:
        if gate.shape[-1] % 2:
            raise ValueError(f"{_OP}: without up, gate dim -1 must be even, got {gate.shape[-1]}")
        n = gate.shape[-1] // 2
        shape = (*gate.shape[:-1], n)
        u_src, stride_u, g_src, stride_g = g2[:, n:], g2.stride(0), g2, g2.stride(0)
    else:
        if up.shape != gate.shape or up.dtype != gate.dtype or up.device != gate.device:
            raise ValueError(
                f"{_OP}: up {list(up.shape)} {up.dtype} on {up.device} must match gate "
                f"{list(gate.shape)} {gate.dtype} on {gate.device}"
            )
        u2 = _rows(up, "up")
        n, shape = gate.shape[-1], tuple(gate.shape)
        u_src, stride_u, g_src, stride_g = u2, u2.stride(0), g2, g2.stride(0)
    m = g2.shape[0]
    y = torch.empty((m, n), dtype=gate.dtype, device=gate.device)
    if m and n:
        _silu_mul_kernel[(m, triton.cdiv(n, BLOCK))](
            g_src, u_src, y, n, stride_g, stride_u, BLOCK=BLOCK, num_warps=4, **triton_pdl(y.device)
        )
    return y.reshape(shape)


def silu_mul_cuda(gate: torch.Tensor, up: torch.Tensor | None) -> torch.Tensor:
    """`torch.ops.fusegraph.silu_mul`'s CUDA kernel (`silu_mul_rows` in the op's schema order)."""
    return silu_mul_rows(gate, up)
