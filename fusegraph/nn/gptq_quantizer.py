"""The GPTQ algorithm (Frantar et al. 2022): quantize a weight column by column, spreading each
column's rounding error over the not-yet-quantized columns through the inverse Hessian of the
layer's calibration inputs, `H = 2·XᵀX/n`. With `desc_act`, columns go in descending `diag(H)`
order (act order) and `g_idx[perm[i]] = i // group_size`.

The output is the same AutoGPTQ tensor set as round-to-nearest (`quantize_gptq` without inputs).

Example:
    >>> tensors = gptq_quantize(weight, cfg, inputs=calibration_x)   # x [n, in_features]
"""

from __future__ import annotations

import torch

from fusegraph.nn.quant import QuantizationConfig
from fusegraph.ops.gptq_packing import pack_rows


def gptq_quantize(
    weight: torch.Tensor,
    config: QuantizationConfig,
    inputs: torch.Tensor,
    *,
    damp_percent: float = 0.01,
    scales_dtype: torch.dtype = torch.float16,
) -> dict[str, torch.Tensor]:
    """GPTQ-quantize `weight` `[N, K]` against calibration `inputs` `[n, K]`.

    Args:
        weight: Float `[out_features, in_features]`.
        config: Bits, group size, sym, desc_act and zero format.
        inputs: The layer's input activations on calibration data.
        damp_percent: Added to `diag(H)`, as a fraction of its mean, for a stable inverse.
        scales_dtype: The stored scales' type.

    Returns:
        `{"qweight", "qzeros", "scales", "g_idx"}` in AutoGPTQ layout.
    """
    w = weight.to(torch.float64).clone()
    n_out, k = w.shape
    if inputs.dim() != 2 or inputs.shape[1] != k:
        raise ValueError(f"gptq_quantize: inputs must be [n, {k}], got {list(inputs.shape)}")
    x = inputs.to(torch.float64)
    hessian = 2 * x.t() @ x / x.shape[0]
    dead = hessian.diagonal() == 0
    hessian[dead, dead] = 1
    w[:, dead] = 0
    perm = (
        torch.argsort(hessian.diagonal(), descending=True, stable=True)
        if config.desc_act
        else torch.arange(k)
    )
    w, hessian = w[:, perm], hessian[perm][:, perm]
    hessian += damp_percent * hessian.diagonal().mean() * torch.eye(k, dtype=torch.float64)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian)), upper=True)
    q, scales, zeros = _quantize_columns(w, hinv, config, scales_dtype)
    group_of = torch.arange(k) // config.effective_group_size(k)
    g_idx = torch.empty(k, dtype=torch.int64)
    g_idx[perm] = group_of
    q_rows = torch.empty_like(q)
    q_rows[perm] = q  # back to input-row order: row perm[i] holds column i's values
    stored = zeros - 1 if config.zero_format == "v1" else zeros
    return {
        "qweight": pack_rows(q_rows, config.bits),
        "qzeros": pack_rows(stored.t(), config.bits).t().contiguous(),
        "scales": scales,
        "g_idx": g_idx.to(torch.int32),
    }


def _quantize_columns(
    w: torch.Tensor, hinv: torch.Tensor, cfg: QuantizationConfig, scales_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The column loop on permuted `w` `[N, K]`: q `[K, N]`, scales `[G, N]`, zeros `[G, N]`."""
    n_out, k = w.shape
    group = cfg.effective_group_size(k)
    maxq = (1 << cfg.bits) - 1
    q = torch.empty(k, n_out, dtype=torch.int64)
    scales, zeros = [], []
    for i in range(k):
        if i % group == 0:  # a group's grid comes from its columns as updated so far
            scale, zero = _grid(w[:, i : i + group], cfg, scales_dtype)
            scales.append(scale)
            zeros.append(zero)
        col = w[:, i]
        q[i] = torch.clamp(torch.round(col / scale.double()) + zero, 0, maxq).to(torch.int64)
        err = (col - (q[i] - zero) * scale.double()) / hinv[i, i]
        w[:, i:] -= err[:, None] * hinv[i, i:][None, :]
    return q, torch.stack(scales), torch.stack(zeros)


def _grid(
    cols: torch.Tensor, cfg: QuantizationConfig, scales_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row scale (stored dtype, rounded up) and zero point of GPTQ's quantizer; the range
    always includes 0, sym centres it on z = 2^(bits-1), v1 keeps z >= 1 (it stores z - 1)."""
    maxq = (1 << cfg.bits) - 1
    xmin = torch.clamp(cols.min(dim=1).values, max=0)
    xmax = torch.clamp(cols.max(dim=1).values, min=0)
    if cfg.sym:
        xmax = torch.maximum(-xmin, xmax)
        xmin = -xmax
    elif cfg.zero_format == "v1":
        xmin = torch.minimum(xmin, -xmax / (maxq - 1))
    empty = (xmin == 0) & (xmax == 0)
    xmin, xmax = torch.where(empty, -1.0, xmin), torch.where(empty, 1.0, xmax)
    raw = ((xmax - xmin) / maxq).float()
    stored = raw.to(scales_dtype)
    low = stored.float() < raw
    scale = torch.where(low, torch.nextafter(stored, torch.full_like(stored, float("inf"))), stored)
    if cfg.sym:
        return scale, torch.full_like(xmin, 1 << (cfg.bits - 1), dtype=torch.int64)
    z = torch.clamp(torch.round(-xmin / scale.double()), 1 if cfg.zero_format == "v1" else 0, maxq)
    return scale, z.to(torch.int64)
