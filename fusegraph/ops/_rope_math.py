"""Rope arithmetic shared by `fg.rope` and `fg.rope_split_store`: the per-token cos/sin rows
(with the length-dependent scalings) and the rotation (full or partial, both pairings).

**The table and its variants.** `freqs_cis` is `[V·P, R]`: row `p` of variant `v` (row
`v·P + p`) holds `[cos θ0·p, sin θ0·p, …, cos θ(R/2-1)·p, sin θ(R/2-1)·p]`. R, the rotary
width, is at most the head dim D: only the first R features of a head rotate (partial
rotary: GPT-J's `rotary_dim`, NeoX/Phi's `partial_rotary_factor`), the rest pass through.
Each sequence `b` picks its row by its *total length after the step*
`L_b = cache_lengths[b] + (row_offsets[b+1] - row_offsets[b])`, as transformers does:

- no variant: V = 1, row `p`;
- `long_after = N` (longrope, Phi-3): V = 2, the short-factor table then the long-factor
  table; a sequence with `L_b > N` reads the long one (rows `P + p`);
- `ntk = (theta, factor, N)` (dynamic NTK): V = 1; a sequence with `L_b > N` does not read the
  table but computes its angles from its own base
  `theta_b = theta · (factor·L_b/N − (factor − 1))^(R/(R−2))`, `θi = theta_b^(−2i/R)`, in
  float32 like transformers' `_compute_dynamic_ntk_parameters`.

Example:
    >>> RopeVariant(long_after=4096).tables  # freqs_cis stacks the short and the long table
    2
    >>> ops.rope(q, ro, lens, freqs, interleaved=False, variant=RopeVariant(ntk=(1e4, 2.0, 4096)))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from xdsl.dialects.builtin import Float64Type, FloatAttr, IntegerAttr, i64
from xdsl.ir import Attribute, Operation


@dataclass(frozen=True)
class RopeVariant:
    """How a sequence's length selects its rope angles (see the module docstring).

    Args:
        long_after: longrope: sequences longer than this read the second half of the table.
        ntk: dynamic NTK: `(theta, factor, original_max)`; sequences longer than `original_max`
            compute their angles from a grown base.
    """

    long_after: int | None = None
    ntk: tuple[float, float, int] | None = None

    def __post_init__(self) -> None:
        if self.long_after is not None and self.ntk is not None:
            raise ValueError("rope: long_after (longrope) and ntk (dynamic) cannot both be set")
        if self.long_after is not None and self.long_after < 1:
            raise ValueError(f"rope: long_after must be >= 1, got {self.long_after}")
        if self.ntk is not None:
            theta, factor, original = self.ntk
            if not (theta > 0 and factor > 0 and original >= 1):
                raise ValueError(f"rope: ntk (theta, factor, original_max) must be positive, got {self.ntk}")

    @property
    def tables(self) -> int:
        """V, the number of stacked tables in `freqs_cis`."""
        return 2 if self.long_after is not None else 1

    def props(self) -> dict[str, Attribute]:
        """The op properties that carry this variant (none for the plain table)."""
        props: dict[str, Attribute] = {}
        if self.long_after is not None:
            props["long_after"] = IntegerAttr(self.long_after, i64)
        if self.ntk is not None:
            props["ntk_theta"] = FloatAttr(float(self.ntk[0]), Float64Type())
            props["ntk_factor"] = FloatAttr(float(self.ntk[1]), Float64Type())
            props["ntk_original_max"] = IntegerAttr(int(self.ntk[2]), i64)
        return props

    @staticmethod
    def of(op: Operation) -> RopeVariant:
        """The variant stored on an `fg.rope` / `fg.rope_split_store` op."""
        names = ("long_after", "ntk_theta", "ntk_factor", "ntk_original_max")
        after, theta, factor, orig = (op.properties.get(n) for n in names)
        ntk = None
        if isinstance(theta, FloatAttr) and isinstance(factor, FloatAttr) and isinstance(orig, IntegerAttr):
            ntk = (theta.value.data, factor.value.data, orig.value.data)
        return RopeVariant(after.value.data if isinstance(after, IntegerAttr) else None, ntk)

    def schema_args(self) -> tuple[int | None, list[float] | None]:
        """`(long_after, ntk)` as the torch.library ops take them."""
        ntk = None if self.ntk is None else [float(self.ntk[0]), float(self.ntk[1]), float(self.ntk[2])]
        return self.long_after, ntk

    @staticmethod
    def from_schema(long_after: int | None, ntk: list[float] | None) -> RopeVariant:
        """The inverse of `schema_args`."""
        return RopeVariant(long_after, None if ntk is None else (ntk[0], ntk[1], int(ntk[2])))


def token_freqs(
    freqs_cis: torch.Tensor,
    batch: torch.Tensor,
    pos: torch.Tensor,
    row_offsets: torch.Tensor,
    lengths: torch.Tensor,
    variant: RopeVariant,
) -> torch.Tensor:
    """The `[T, R]` cos/sin rows of each token (`batch`, `pos` from `token_positions`; metadata
    int64). IREE-friendly: 1-D index_selects and elementwise math only.

    On CUDA a row past the table is clamped to the last one instead of device-asserting (which
    would poison the CUDA context): the eager runtime's device check refuses such a step
    (`runtime/write_guard.py`) and raises at the next call; its outputs are not meaningful."""
    if pos.is_cuda:
        pos = pos.clamp(0, max(freqs_cis.shape[0] // variant.tables - 1, 0))
    if variant.long_after is None and variant.ntk is None:
        return freqs_cis.index_select(0, pos)
    total = (lengths + row_offsets[1:] - row_offsets[:-1]).index_select(0, batch)  # L_b per token
    if variant.long_after is not None:
        rows = freqs_cis.shape[0] // 2
        return freqs_cis.index_select(0, pos + (total > variant.long_after).to(torch.int64) * rows)
    assert variant.ntk is not None
    theta, factor, original = variant.ntk
    table = freqs_cis.index_select(0, pos)
    r = freqs_cis.shape[1]
    grown = total.to(torch.float32) * (factor / original) - (factor - 1.0)
    base = theta * grown.clamp(min=1.0) ** (r / (r - 2))  # [T]; unused where L_b <= N
    exponent = torch.arange(0, r, 2, device=pos.device, dtype=torch.float32) / r  # [R/2]
    inv_freq = 1.0 / base[:, None] ** exponent[None]
    angles = pos.to(torch.float32)[:, None] * inv_freq
    computed = torch.stack([angles.cos(), angles.sin()], dim=-1).reshape(-1, r).to(freqs_cis.dtype)
    return torch.where((total > original)[:, None], computed, table)


def apply_rotary(x: torch.Tensor, freqs: torch.Tensor, *, interleaved: bool) -> torch.Tensor:
    """Rotate the first R features of `x [T, H, D]` by per-row `freqs [T, R]` (cos/sin
    interleaved), in float32; features R..D pass through. `interleaved` pairs `(2i, 2i+1)`
    (GPT-J), otherwise `(i, i + R/2)` (NeoX / HF `rotate_half` on the rotary part)."""
    t, h, d = x.shape
    r = freqs.shape[-1]
    f = freqs.to(torch.float32).reshape(t, 1, r // 2, 2)
    cos, sin = f[..., 0], f[..., 1]
    xf = x.to(torch.float32)
    rot, rest = (xf, None) if r == d else (xf[..., :r], xf[..., r:])
    if interleaved:
        pairs = rot.reshape(t, h, r // 2, 2)
        a, b = pairs[..., 0], pairs[..., 1]
        out = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).reshape(t, h, r)
    else:
        a, b = rot[..., : r // 2], rot[..., r // 2 :]
        out = torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)
    if rest is not None:
        out = torch.cat([out, rest], dim=-1)
    return out.to(x.dtype)
