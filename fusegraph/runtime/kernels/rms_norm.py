"""Triton kernel for `fusegraph::rms_norm` (`fg.rms_norm`): one launch instead of ~8 aten kernels.

`y = (x / sqrt(mean(x**2, -1) + eps) * weight)[..., perm]` over the last dim D of `x`; the
leading dims are flattened to rows. A program normalizes ROWS rows (ROWS > 1 only for small D,
e.g. Qwen3's qk-norm at D = head_dim = 128) held in registers, BLOCK >= D columns each; past
`MAX_BLOCK` columns a row is streamed twice in 4096-column chunks (sum of squares, then the
scaled store). The sum of squares is accumulated in float32 and the scaling is done in float32 as in
the aten math (`ops/norm.py: rms_norm_math`), then rounded once to x's dtype.

`perm` (int32 `[D]`, a permutation) gathers inside the row: the sum of squares is taken from x's
row read in order (coalesced; a permutation does not change it), then column j loads
`x[perm[j]]` (from L1: that read brought the lines in) and stores `y[j]`, so an act-order GEMM gets its
permuted input without a separate permute kernel. `perm[j]` and `weight[perm[j]]` are loaded beside the row, the
weight from a copy in perm order made once (`_weight_in_perm_order`), so neither waits on another load. The scattered
loads are what a permuted row costs; with few rows they are split over SPLIT programs a row
(each re-reads the row for its sum from L2) to use more SMs. `rms_norm_cuda` (the
op's kernel) checks the perm's values once per tensor; the kernel reads 0 for an entry outside
[0, D) as a last guard. No host sync after that check: it can be captured in a CUDA graph.
From `SEPARATE_PERM_ROWS` rows (fp16/bf16) the op kernels norm the rows in order and permute
them with `gptq_cuda_permute.permute_rows` instead (two passes are cheaper there), once the
perm's values have been checked: that kernel does not mask a bad entry.
"""

# ruff: noqa: N803, N806 - Triton's convention: constexpr parameters are UPPER_CASE
from __future__ import annotations

import functools
from typing import Any

import torch
import triton
import triton.language as tl

from fusegraph.runtime.kernels.gptq_cuda_permute import PERMUTE_MAX_K, gather_last_dim
from fusegraph.runtime.kernels.pdl import pdl_enter, pdl_prefetch_l2, triton_pdl
from fusegraph.runtime.kernels.tensor_cache import UNSEEN, derived

__all__ = [
    "MAX_BLOCK",
    "add_rms_norm_cuda",
    "add_rms_norm_rows",
    "rms_norm_cuda",
    "rms_norm_plan",
    "rms_norm_rows",
]

MAX_BLOCK = 16384
"""The most columns a program holds in registers at once (a row longer than that is chunked)."""
_ROW_ELEMS = 2048  # elements a program aims at when it packs several short rows
_CHUNK = 4096  # columns a program streams at a time through a chunked row (no spills at 8 warps)
_MIN_SLICE = 256  # the fewest columns a program stores when a row's permuted stores are split
_OP = "fg.rms_norm"
_ADD_OP = "fg.add_rms_norm"
_FLOATS = (torch.float16, torch.bfloat16, torch.float32)
SEPARATE_PERM_ROWS = 16
"""From this many rows the op kernels (`rms_norm_cuda`, `add_rms_norm_cuda`) norm the rows in order and
permute them with `permute_rows` after. Alone, at M = 64, D = 4096 (H200) that took 3.25 us against the
in-kernel gather's 3.70, tying at 32 rows; in the decode step's PDL chain the gather loses from fewer rows.
The act-order Llama-3-8B decode step (`gpu_act_order_decode.py`, ctx 2048, H200, 2026-12-02, over the plain
model, two rounds each): gathering below 64 rows, batch 16 1.041x / 1.040x, batch 32 1.042x / 1.043x; below 16
rows, 1.037x / 1.036x and 1.014x / 1.016x. Apart from 1 row instead, batches 1 / 4 / 8 went from 1.011-1.021x to
1.042-1.048x: there the gather wins."""


@triton.jit
def _values(x_row, r_row, idx, mask, HAS_RES: tl.constexpr):
    """x at `idx` of the rows, as float32; with a residual, `x + r` rounded to x's dtype first
    (what `fg.add` stores and the unfused norm reads)."""
    x = tl.load(x_row + idx, mask=mask, other=0.0)
    if HAS_RES:
        x = (x.to(tl.float32) + tl.load(r_row + idx, mask=mask, other=0.0).to(tl.float32)).to(x.dtype)
    return x.to(tl.float32)


@triton.jit
def _gathered(x_row, r_row, w_ptr, perm_ptr, cols, row_ok, D, HAS_PERM: tl.constexpr, HAS_RES: tl.constexpr):
    """Columns `cols` of the rows and their weights, as float32: `x[perm[cols]]`, `w[perm[cols]]`
    with a perm (an entry outside [0, D) reads 0), else `x[cols]`, `w[cols]`."""
    col_ok = cols < D
    if HAS_PERM:
        src = tl.load(perm_ptr + cols, mask=col_ok, other=0)
        col_ok = col_ok & (src >= 0) & (src < D)
    else:
        src = cols
    x = _values(x_row, r_row, src[None, :], row_ok[:, None] & col_ok[None, :], HAS_RES)
    w = tl.load(w_ptr + src, mask=col_ok, other=0.0).to(tl.float32)
    return x, w


@triton.jit
def _rms_norm_kernel(
    x_ptr, r_ptr, s_ptr, w_ptr, perm_ptr, y_ptr, M, D, stride_xm, stride_rm, eps,
    ROWS: tl.constexpr, BLOCK: tl.constexpr, HAS_PERM: tl.constexpr, CHUNKED: tl.constexpr, SPLIT: tl.constexpr,
    HAS_RES: tl.constexpr, PDL: tl.constexpr, W_IN_PERM: tl.constexpr,
):  # fmt: skip
    if not CHUNKED:  # the weights (and perm) this program reads, into L2 while the kernel before runs
        if HAS_PERM:
            pdl_prefetch_l2(perm_ptr, tl.program_id(1) * (BLOCK // SPLIT), BLOCK // SPLIT, D, PDL)
        if W_IN_PERM:
            pdl_prefetch_l2(w_ptr, tl.program_id(1) * (BLOCK // SPLIT), BLOCK // SPLIT, D, PDL)
        else:
            pdl_prefetch_l2(w_ptr, 0, BLOCK, D, PDL)
    pdl_enter(PDL)
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    if HAS_PERM and not CHUNKED:
        # 0. This program's perm entries and their weights, issued beside the row's loads below rather than after
        # its sum: they do not wait for it. With W_IN_PERM the weight comes in perm order (`_weight_in_perm_order`),
        # a coalesced load that does not wait for the perm's either.
        part = tl.program_id(1) * (BLOCK // SPLIT) + tl.arange(0, BLOCK // SPLIT)
        src = tl.load(perm_ptr + part, mask=part < D, other=0)
        src_ok = (part < D) & (src >= 0) & (src < D)
        if W_IN_PERM:
            wg = tl.load(w_ptr + part, mask=part < D, other=0.0).to(tl.float32)
        else:
            wg = tl.load(w_ptr + src, mask=src_ok, other=0.0).to(tl.float32)
    row_ok = rows < M
    x_row = x_ptr + rows.to(tl.int64)[:, None] * stride_xm
    r_row = r_ptr + rows.to(tl.int64)[:, None] * stride_rm
    y_row = y_ptr + rows.to(tl.int64)[:, None] * D
    s_row = s_ptr + rows.to(tl.int64)[:, None] * D
    # 1. The sum of squares in row order (a permutation does not change it): coalesced loads.
    if not CHUNKED:
        cols = tl.arange(0, BLOCK)
        ok = row_ok[:, None] & (cols < D)[None, :]
        x = _values(x_row, r_row, cols[None, :], ok, HAS_RES)
        if HAS_RES:
            # of a split row, program 0 stores the sum (a tensor mask: the interpreter wants one)
            tl.store(
                s_row + cols[None, :],
                x.to(s_ptr.dtype.element_ty),
                mask=ok & (tl.program_id(1) + 0 * cols == 0),
            )
        rstd = tl.math.rsqrt(tl.sum(x * x, axis=1) / D + eps)
        if not HAS_PERM:  # the rows are in registers: scale and store them
            w = tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
            tl.store(
                y_row + cols[None, :], (x * rstd[:, None] * w[None, :]).to(y_ptr.dtype.element_ty), mask=ok
            )
    else:
        acc = tl.zeros([ROWS, BLOCK], dtype=tl.float32)
        for start in range(0, D, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            ok = row_ok[:, None] & (cols < D)[None, :]
            x = _values(x_row, r_row, cols[None, :], ok, HAS_RES)
            if HAS_RES:
                tl.store(s_row + cols[None, :], x.to(s_ptr.dtype.element_ty), mask=ok)  # SPLIT == 1
            acc += x * x
        rstd = tl.math.rsqrt(tl.sum(acc, axis=1) / D + eps)
    # 2. This program's 1/SPLIT of the columns (all of them, chunk by chunk, when CHUNKED): the
    # gathered x[perm] re-reads the lines step 1 just brought into L1 (a residual sum is formed
    # again from x and r, not read back: no program waits for another's stores). SPLIT > 1
    # spreads a few rows' scattered loads over several SMs.
    if HAS_PERM and not CHUNKED:
        xg = _values(x_row, r_row, src[None, :], row_ok[:, None] & src_ok[None, :], HAS_RES)
        tl.store(
            y_row + part[None, :],
            (xg * rstd[:, None] * wg[None, :]).to(y_ptr.dtype.element_ty),
            mask=row_ok[:, None] & (part < D)[None, :],
        )
    elif CHUNKED:
        for start in range(tl.program_id(1) * (BLOCK // SPLIT), D, BLOCK):
            part = start + tl.arange(0, BLOCK // SPLIT)
            xg, wg = _gathered(x_row, r_row, w_ptr, perm_ptr, part, row_ok, D, HAS_PERM, HAS_RES)
            y = xg * rstd[:, None] * wg[None, :]
            tl.store(
                y_row + part[None, :],
                y.to(y_ptr.dtype.element_ty),
                mask=row_ok[:, None] & (part < D)[None, :],
            )


def rms_norm_plan(
    m: int, d: int, perm: bool = False, sms: int = 1, split: int | None = None
) -> dict[str, Any]:
    """The launch shape for `m` rows of `d` columns: rows a program (ROWS), columns held at
    once (BLOCK), whether a row is chunked (CHUNKED), the programs a row's permuted stores are
    split over (SPLIT; with a perm and few rows, up to one program for two of the `sms` SMs,
    unless `split` is given), num_warps and the grid.

    Example:
        >>> rms_norm_plan(1, 4096)
        {'ROWS': 1, 'BLOCK': 4096, 'CHUNKED': False, 'SPLIT': 1, 'num_warps': 8, 'grid': (1, 1)}
    """
    chunked = d > MAX_BLOCK
    block = min(_CHUNK, MAX_BLOCK) if chunked else min(triton.next_power_of_2(max(d, 1)), MAX_BLOCK)
    rows = 1 if chunked else max(1, min(triton.next_power_of_2(max(m, 1)), _ROW_ELEMS // block))
    programs = triton.cdiv(m, rows)
    if split is None:  # about half the SMs: at M = 16, D = 4096 split 4 takes 2.48 us, split 8 2.80 (H200)
        fits = max(1, sms // (2 * programs))
        split = 1 if chunked or not perm else min(1 << (fits.bit_length() - 1), max(1, block // _MIN_SLICE))
    if split < 1 or split & (split - 1) or (split > 1 and (chunked or split > block)):
        raise ValueError(
            f"{_OP}: split must be a power of two <= {block} (BLOCK), and 1 for a chunked row, got {split}"
        )
    warps = max(1, min(16, rows * block // 512))
    return {"ROWS": rows, "BLOCK": block, "CHUNKED": chunked, "SPLIT": split, "num_warps": warps,
            "grid": (programs, split)}  # fmt: skip


@functools.cache
def _sm_count(device: torch.device) -> int:
    return int(torch.cuda.get_device_properties(device).multi_processor_count)


def _check(op: str, x: torch.Tensor, weight: torch.Tensor, perm: torch.Tensor | None) -> None:
    """ValueErrors naming the op, the operand and the dims (never a Triton error)."""
    if x.dtype not in _FLOATS:
        raise ValueError(f"{op}: input dtype must be float16, bfloat16 or float32, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError(f"{op}: input must have rank >= 1, got a scalar")
    d = x.shape[-1]
    if weight.dim() != 1 or weight.shape[0] != d:
        raise ValueError(f"{op}: weight shape {list(weight.shape)} != [{d}] (input dim -1)")
    if weight.dtype != x.dtype:
        raise ValueError(f"{op}: weight dtype {weight.dtype} != input dtype {x.dtype}")
    operands = {"weight": weight} if perm is None else {"weight": weight, "perm": perm}
    for name, t in operands.items():
        if t.device != x.device:
            raise ValueError(f"{op}: {name} on {t.device}, input on {x.device}")
    if perm is None:
        return
    if perm.dtype != torch.int32:
        raise ValueError(f"{op}: perm dtype must be int32, got {perm.dtype}")
    if perm.dim() != 1 or perm.shape[0] != d:
        raise ValueError(f"{op}: perm shape {list(perm.shape)} != [{d}] (input dim -1)")


def rms_norm_rows(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    perm: torch.Tensor | None = None,
    *,
    split: int | None = None,
) -> torch.Tensor:
    """`(x / sqrt(mean(x**2, -1) + eps) * weight)[..., perm]` in one launch.

    Args:
        x: `[..., D]` float16/bfloat16/float32 (made contiguous if its rows are not).
        weight: `[D]`, x's dtype.
        eps: added to the mean of squares.
        perm: optional int32 `[D]`, a permutation of [0, D): `y[..., j] = norm(x)[..., perm[j]]`.
            Its values are not read here (that would sync; `rms_norm_cuda`, the op's kernel, checks
            them once per tensor); an entry outside [0, D) reads 0, never memory out of bounds.
        split: programs a row's permuted stores are spread over (a power of two; None: the plan's
            choice, more for fewer rows, see `rms_norm_plan`).

    Returns:
        A new contiguous tensor of x's shape and dtype.

    Raises:
        ValueError: a dtype, device or shape mismatch, naming `fg.rms_norm`, the operand and the dims.

    Example:
        >>> y = rms_norm_rows(h, norm_weight, 1e-5)            # h [T, 4096] fp16
        >>> yp = rms_norm_rows(h, norm_weight, 1e-5, perm)     # the act-order GEMM's input
    """
    return _launch(x, None, weight, eps, perm, split)[1]


def add_rms_norm_rows(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    perm: torch.Tensor | None = None,
    *,
    split: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`s = x + residual` (rounded to x's dtype) and `rms_norm_rows(s, weight, eps, perm)`, one launch.

    Args:
        x, residual: `[..., D]` of one shape and dtype (float16/bfloat16/float32).
        weight, eps, perm, split: as for `rms_norm_rows`.

    Returns:
        (s, y): new contiguous tensors of x's shape and dtype.

    Raises:
        ValueError: a dtype, device or shape mismatch, naming `fg.add_rms_norm`, the operand and the dims.

    Example:
        >>> h, y = add_rms_norm_rows(h, attn_out, norm_weight, 1e-5)   # the residual stream, the normed input
    """
    return _launch(x, residual, weight, eps, perm, split)


def _launch(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float,
    perm: torch.Tensor | None,
    split: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    op = _OP if residual is None else _ADD_OP
    _check(op, x, weight, perm)
    if residual is not None and (
        residual.shape != x.shape or residual.dtype != x.dtype or residual.device != x.device
    ):
        raise ValueError(
            f"{op}: rhs {list(residual.shape)} {residual.dtype} on {residual.device} != "
            f"lhs {list(x.shape)} {x.dtype} on {x.device}"
        )
    shape = x.shape
    s = torch.empty(shape, dtype=x.dtype, device=x.device) if residual is not None else x
    if x.numel() == 0:
        return s, torch.empty(shape, dtype=x.dtype, device=x.device)
    d = x.shape[-1]
    x2, r2 = _rows(x, d), None if residual is None else _rows(residual, d)
    m = x2.shape[0]
    y = torch.empty((m, d), dtype=x.dtype, device=x.device)
    weight = weight.contiguous()
    perm = None if perm is None else perm.contiguous()
    sms = _sm_count(x.device) if x.is_cuda else 1
    p = rms_norm_plan(m, d, perm is not None, sms, split)
    w_in_perm = None if perm is None or p["CHUNKED"] else _weight_in_perm_order(weight, perm)
    _rms_norm_kernel[p["grid"]](
        x2, x2 if r2 is None else r2, y if residual is None else s, weight if w_in_perm is None else w_in_perm,
        weight if perm is None else perm, y, m, d, x2.stride(0), 0 if r2 is None else r2.stride(0), float(eps),
        ROWS=p["ROWS"], BLOCK=p["BLOCK"], HAS_PERM=perm is not None, CHUNKED=p["CHUNKED"], SPLIT=p["SPLIT"],
        HAS_RES=residual is not None, W_IN_PERM=w_in_perm is not None, num_warps=p["num_warps"],
        **triton_pdl(x.device),
    )  # fmt: skip
    return s, y.reshape(shape)


def _weight_in_perm_order(weight: torch.Tensor, perm: torch.Tensor) -> torch.Tensor | None:
    """`weight[perm]` (0 at an entry outside [0, D)), made once per (weight, perm) pair (`tensor_cache.derived`);
    None under CUDA-graph capture for a pair not seen before (the kernel then gathers the weight through the perm).
    Its load then does not wait for the perm's: in a decode step both come from HBM (H200, twentieth session:
    gathering it through the perm after the row's sum, the permuted norm advanced the step 1.04 µs more)."""

    def build() -> torch.Tensor:
        d = weight.shape[0]
        src = perm.to(torch.int64)
        ok = (src >= 0) & (src < d)
        return torch.where(ok, weight.index_select(0, src.clamp(0, max(d - 1, 0))), 0).contiguous()

    w_in_perm = derived("rms_norm weight[perm]", (weight, perm), build)
    return None if w_in_perm is UNSEEN else w_in_perm


def _rows(x: torch.Tensor, d: int) -> torch.Tensor:
    """x as `[rows, d]` with unit column stride (a view when it can be)."""
    x2 = x.reshape(-1, d)
    return x2.contiguous() if d > 1 and x2.stride(1) != 1 else x2


def rms_norm_cuda(
    x: torch.Tensor, weight: torch.Tensor, perm: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """`torch.ops.fusegraph.rms_norm`'s CUDA kernel: `rms_norm_rows` in the op's schema order,
    its perm's values checked once per tensor first (`ops.norm.check_perm`); from
    `SEPARATE_PERM_ROWS` rows the norm in order, then `permute_rows`."""
    if perm is not None and _permute_apart(_OP, x, weight, perm):
        return gather_last_dim(rms_norm_rows(x, weight, eps), perm)
    return rms_norm_rows(x, weight, eps, perm)


def add_rms_norm_cuda(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, perm: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """`torch.ops.fusegraph.add_rms_norm`'s CUDA kernel: `add_rms_norm_rows` in the op's schema
    order, its perm checked once per tensor first; permuted apart as `rms_norm_cuda` does."""
    if perm is not None and _permute_apart(_ADD_OP, x, weight, perm):
        s, y = add_rms_norm_rows(x, residual, weight, eps)
        return s, gather_last_dim(y, perm)
    return add_rms_norm_rows(x, residual, weight, eps, perm)


def _permute_apart(op: str, x: torch.Tensor, weight: torch.Tensor, perm: torch.Tensor) -> bool:
    """Checks the perm's values (once per tensor); whether x's rows are permuted after the norm
    rather than gathered in the kernel: `_many_rows(x)`, and a perm whose values were read, as
    `permute_rows` does not mask an entry outside [0, D) (not so under a first capture). Then its
    dtype, shape and device are checked here (ValueErrors naming `op`), else by the kernel's launch."""
    from fusegraph.ops.norm import check_perm, perm_checked  # here: kernel modules import only torch, triton

    if x.dim() >= 1:
        check_perm(perm, x.shape[-1])
    if not (_many_rows(x) and perm_checked(perm)):
        return False
    _check(op, x, weight, perm)
    return True


def _many_rows(x: torch.Tensor) -> bool:
    """`SEPARATE_PERM_ROWS` rows or more of fp16/bf16 on CUDA, within `permute_rows`' K."""
    d = x.shape[-1] if x.dim() >= 1 else 0
    ok = x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and 0 < d <= PERMUTE_MAX_K
    return ok and x.numel() // d >= SEPARATE_PERM_ROWS
