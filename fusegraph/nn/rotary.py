"""`RotaryEmbedding`: rope settings and the `freqs_cis` table (scalings in `rope_scaling.py`).

The table `freqs_cis` is `[max_seq_len, R]` float32, R the rotary width (`head_dim`, or
`rotary_dim` / `int(head_dim * partial_rotary_factor)` with partial rotary: only the first R
features of a head rotate); row `p` holds `[cos θ0·p, sin θ0·p, cos θ1·p, sin θ1·p, ...]`
(times the scaling's attention factor, if any), with `θi = inv_freq[i]` computed as in HF
transformers' `rope_utils`. With `LongRopeScaling` it stacks two tables, `[2·max_seq_len, R]`
(short factors, then long); `rope.variant` tells the ops how a sequence's length picks its
rows (longrope) or grows its base (`DynamicNTKRopeScaling`).

**How the table reaches the graph.** `rope.freqs_cis` adds a *weight* named
`rope.weight_name` (default `"rope.freqs_cis"`) to the current graph; its value comes from
`rope.state_dict()`, which every layer holding the rope merges into its own `state_dict()`,
unprefixed (one table shared by all layers). A weight keeps the IR small and lets the runtime
bind the exact host-computed table rather than re-deriving it with transcendental ops.

Example:
    >>> rope = RotaryEmbedding(dim=64, n_heads=4, theta=10000.0, max_seq_len=256,
    ...                        scaling=Llama3RopeScaling(8.0, 1.0, 4.0, 8192))
    >>> rope.state_dict()["rope.freqs_cis"].shape
    torch.Size([256, 16])
"""

from __future__ import annotations

import math
from typing import Any

import torch

from fusegraph.compiler import DeviceRef, DType, Graph, TensorType, TensorValue
from fusegraph.nn.rope_scaling import (
    DynamicNTKRopeScaling,
    LinearRopeScaling,
    Llama3RopeScaling,
    LongRopeScaling,
    RopeScaling,
    YarnRopeScaling,
    longrope_inv_freq,
    rope_inv_freq,
    rope_scaling_from_hf,
)
from fusegraph.ops.rope import RopeVariant

__all__ = [
    "DynamicNTKRopeScaling",
    "LinearRopeScaling",
    "Llama3RopeScaling",
    "LongRopeScaling",
    "RopeScaling",
    "RotaryEmbedding",
    "YarnRopeScaling",
    "rope_inv_freq",
    "rope_scaling_from_hf",
]


class RotaryEmbedding:
    """Rotary position embedding settings and the `freqs_cis` table (MAX's constructor).

    Args:
        dim: Model (hidden) size.
        n_heads: Attention heads; `head_dim` defaults to `dim // n_heads`.
        theta: The rope base.
        max_seq_len: Rows of the table (positions 0 .. max_seq_len - 1).
        head_dim: Explicit head size, when it is not `dim // n_heads`.
        interleaved: True pairs adjacent dims (GPT-J); False pairs the two halves of the
            rotary part (NeoX, HF Llama/Phi `rotate_half`).
        scaling: One of LinearRopeScaling, Llama3RopeScaling, YarnRopeScaling,
            DynamicNTKRopeScaling, LongRopeScaling, or None.
        device: Where the table lives in the graph (default CPU).
        weight_name: The graph weight's name.
        rotary_dim: Rotate only the first `rotary_dim` features of each head (GPT-J's
            `rotary_dim`); even, 2..head_dim.
        partial_rotary_factor: HF's spelling: `rotary_dim = int(head_dim * factor)`, in (0, 1].

    Raises:
        ValueError: head_dim is odd or not positive; dim is not divisible by n_heads when
            head_dim is implied; theta is not a finite number > 0; max_seq_len is not a positive
            int; rotary_dim is odd or out of range; both rotary_dim and a factor != 1 are given.

    Example:
        >>> rope = RotaryEmbedding(dim=4096, n_heads=32, theta=10000.0, max_seq_len=2048,
        ...                        partial_rotary_factor=0.25, interleaved=False)
        >>> rope.rotary_dim
        32
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        theta: float,
        max_seq_len: int,
        head_dim: int | None = None,
        interleaved: bool = True,
        scaling: RopeScaling | None = None,
        device: DeviceRef | None = None,
        weight_name: str = "rope.freqs_cis",
        rotary_dim: int | None = None,
        partial_rotary_factor: float = 1.0,
    ) -> None:
        self.head_dim_implied = head_dim is None
        if head_dim is None:
            if _not_int(n_heads) or n_heads <= 0 or _not_int(dim) or dim % n_heads:
                raise ValueError(f"RotaryEmbedding: dim ({dim!r}) must be divisible by n_heads ({n_heads!r})")
            head_dim = dim // n_heads
        if _not_int(head_dim) or head_dim <= 0 or head_dim % 2:
            raise ValueError(f"RotaryEmbedding: head_dim must be positive and even, got {head_dim=}")
        if _not_int(max_seq_len) or max_seq_len <= 0:
            raise ValueError(f"RotaryEmbedding: max_seq_len must be a positive int, got {max_seq_len=}")
        if (
            isinstance(theta, bool)
            or not isinstance(theta, int | float)
            or not math.isfinite(theta)
            or theta <= 0
        ):
            raise ValueError(f"RotaryEmbedding: theta must be a finite number > 0, got {theta=}")
        self.rotary_dim = _rotary_dim(head_dim, rotary_dim, partial_rotary_factor)
        self.dim, self.n_heads, self.theta, self.max_seq_len = dim, n_heads, float(theta), max_seq_len
        self.head_dim, self.interleaved, self.scaling = head_dim, interleaved, scaling
        self.device = device if device is not None else DeviceRef.CPU()
        self.weight_name = weight_name
        self.variant = _variant(scaling, self.theta, self.rotary_dim)
        self._table: torch.Tensor | None = None

    def inv_freq(self) -> tuple[torch.Tensor, float]:
        """`(θ, attention_factor)`: the `rotary_dim // 2` frequencies (float64) and the factor
        the table's cos and sin are multiplied by (1.0 except for YaRN and longrope). Longrope:
        the short-factor ones; dynamic NTK: the unscaled ones."""
        return rope_inv_freq(self.rotary_dim, self.theta, self.scaling)

    def table(self) -> torch.Tensor:
        """The float32 `[V·max_seq_len, rotary_dim]` table (cached; V = 2 for longrope)."""
        if self._table is None:
            inv_freq, attention_factor = self.inv_freq()
            freqs = [inv_freq]
            if isinstance(self.scaling, LongRopeScaling):
                freqs.append(longrope_inv_freq(self.rotary_dim, self.theta, self.scaling, long=True))
            positions = torch.arange(self.max_seq_len, dtype=torch.float64)[:, None]
            tables = []
            for f in freqs:
                angles = positions * f[None, :]
                pairs = torch.stack([angles.cos(), angles.sin()], dim=-1) * attention_factor
                tables.append(pairs.reshape(self.max_seq_len, self.rotary_dim))
            self._table = torch.cat(tables).to(torch.float32)
        return self._table

    @property
    def freqs_cis(self) -> TensorValue:
        """The table as a weight of the current graph (`fg.weight {name = "rope.freqs_cis"}`)."""
        rows = self.variant.tables * self.max_seq_len
        ty = TensorType(DType.float32, [rows, self.rotary_dim], self.device)
        return Graph.current().add_weight(self.weight_name, ty)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """`{weight_name: table}`: the value bound to the `freqs_cis` weight."""
        return {self.weight_name: self.table()}

    def __repr__(self) -> str:
        return (
            f"RotaryEmbedding(dim={self.dim}, n_heads={self.n_heads}, theta={self.theta}, "
            f"max_seq_len={self.max_seq_len}, head_dim={self.head_dim}, rotary_dim={self.rotary_dim}, "
            f"interleaved={self.interleaved}, scaling={self.scaling})"
        )


def _not_int(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, int)


def _rotary_dim(head_dim: int, rotary_dim: int | None, factor: float) -> int:
    """R from `rotary_dim` or HF's `int(head_dim * partial_rotary_factor)`, checked."""
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not 0 < factor <= 1:
        raise ValueError(f"RotaryEmbedding: partial_rotary_factor must be in (0, 1], got {factor!r}")
    if rotary_dim is None:
        rotary_dim = int(head_dim * factor)
    elif factor != 1.0:
        raise ValueError("RotaryEmbedding: give rotary_dim or partial_rotary_factor, not both")
    if _not_int(rotary_dim) or rotary_dim % 2 or not 2 <= rotary_dim <= head_dim:
        raise ValueError(
            f"RotaryEmbedding: rotary_dim must be an even int in [2, head_dim={head_dim}], got {rotary_dim!r}"
        )
    return rotary_dim


def _variant(scaling: RopeScaling | None, theta: float, rotary_dim: int) -> RopeVariant:
    """How the ops pick a sequence's angles by its length (longrope, dynamic NTK)."""
    if isinstance(scaling, LongRopeScaling):
        return RopeVariant(long_after=scaling.original_max_position)
    if isinstance(scaling, DynamicNTKRopeScaling):
        if rotary_dim < 4:
            raise ValueError(f"RotaryEmbedding: dynamic NTK needs rotary_dim >= 4, got {rotary_dim}")
        return RopeVariant(ntk=(theta, scaling.factor, scaling.original_max_position))
    return RopeVariant()
