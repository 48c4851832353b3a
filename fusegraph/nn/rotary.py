"""`RotaryEmbedding` and its frequency scalings (Llama3, linear, YaRN).

The table `freqs_cis` is `[max_seq_len, head_dim]` float32; row `p` holds
`[cos θ0·p, sin θ0·p, cos θ1·p, sin θ1·p, ...]` (times YaRN's attention factor, if any),
with `θi = inv_freq[i]` computed as in HF transformers' `rope_utils`.

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
from dataclasses import dataclass

import torch

from fusegraph.compiler import DeviceRef, DType, Graph, TensorType, TensorValue


@dataclass(frozen=True)
class LinearRopeScaling:
    """HF "linear": positions divided by `factor` (so each θ is divided by it)."""

    factor: float


@dataclass(frozen=True)
class Llama3RopeScaling:
    """HF "llama3": low frequencies divided by `factor`, high ones kept, a smooth ramp between.

    Args:
        factor: Scale of the low frequencies.
        low_freq_factor: Wavelengths above `original_max_position / low_freq_factor` are scaled.
        high_freq_factor: Wavelengths below `original_max_position / high_freq_factor` are kept.
        original_max_position: The pre-training context length.
    """

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position: int


@dataclass(frozen=True)
class YarnRopeScaling:
    """HF "yarn": per-dim blend of interpolation and extrapolation, plus an attention factor.

    Args:
        factor: Context extension factor.
        original_max_position: The pre-training context length.
        beta_fast: Rotations marking the extrapolated (high-frequency) end.
        beta_slow: Rotations marking the interpolated (low-frequency) end.
        mscale: DeepSeek-style mscale (used with `mscale_all_dim`).
        mscale_all_dim: DeepSeek-style mscale over all dims.
        attention_factor: Explicit attention factor; derived from `factor` when None.
        truncate: Round the correction range to whole dims (HF default True).
    """

    factor: float
    original_max_position: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    truncate: bool = True


RopeScaling = LinearRopeScaling | Llama3RopeScaling | YarnRopeScaling


class RotaryEmbedding:
    """Rotary position embedding settings and the `freqs_cis` table (MAX's constructor).

    Args:
        dim: Model (hidden) size.
        n_heads: Attention heads; `head_dim` defaults to `dim // n_heads`.
        theta: The rope base.
        max_seq_len: Rows of the table (positions 0 .. max_seq_len - 1).
        head_dim: Explicit head size, when it is not `dim // n_heads`.
        interleaved: True pairs adjacent dims (GPT-J); False pairs the two halves (NeoX, HF Llama).
        scaling: One of LinearRopeScaling, Llama3RopeScaling, YarnRopeScaling, or None.
        device: Where the table lives in the graph (default CPU).
        weight_name: The graph weight's name.

    Raises:
        ValueError: head_dim is odd or not positive, or dim is not divisible by n_heads when
            head_dim is implied.
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
    ) -> None:
        self.head_dim_implied = head_dim is None
        if head_dim is None:
            if n_heads <= 0 or dim % n_heads:
                raise ValueError(f"RotaryEmbedding: dim ({dim}) must be divisible by n_heads ({n_heads})")
            head_dim = dim // n_heads
        if head_dim <= 0 or head_dim % 2:
            raise ValueError(f"RotaryEmbedding: head_dim must be positive and even, got {head_dim=}")
        if max_seq_len <= 0:
            raise ValueError(f"RotaryEmbedding: max_seq_len must be positive, got {max_seq_len=}")
        self.dim, self.n_heads, self.theta, self.max_seq_len = dim, n_heads, theta, max_seq_len
        self.head_dim, self.interleaved, self.scaling = head_dim, interleaved, scaling
        self.device = device if device is not None else DeviceRef.CPU()
        self.weight_name = weight_name
        self._table: torch.Tensor | None = None

    def inv_freq(self) -> tuple[torch.Tensor, float]:
        """`(θ, attention_factor)`: the `head_dim // 2` frequencies (float64) and the factor
        the table's cos and sin are multiplied by (1.0 except for YaRN)."""
        return rope_inv_freq(self.head_dim, self.theta, self.scaling)

    def table(self) -> torch.Tensor:
        """The float32 `[max_seq_len, head_dim]` table (cached)."""
        if self._table is None:
            inv_freq, attention_factor = self.inv_freq()
            angles = torch.arange(self.max_seq_len, dtype=torch.float64)[:, None] * inv_freq[None, :]
            pairs = torch.stack([angles.cos(), angles.sin()], dim=-1) * attention_factor
            self._table = pairs.reshape(self.max_seq_len, self.head_dim).to(torch.float32)
        return self._table

    @property
    def freqs_cis(self) -> TensorValue:
        """The table as a weight of the current graph (`fg.weight {name = "rope.freqs_cis"}`)."""
        ty = TensorType(DType.float32, [self.max_seq_len, self.head_dim], self.device)
        return Graph.current().add_weight(self.weight_name, ty)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """`{weight_name: table}`: the value bound to the `freqs_cis` weight."""
        return {self.weight_name: self.table()}

    def __repr__(self) -> str:
        return (
            f"RotaryEmbedding(dim={self.dim}, n_heads={self.n_heads}, theta={self.theta}, "
            f"max_seq_len={self.max_seq_len}, head_dim={self.head_dim}, "
            f"interleaved={self.interleaved}, scaling={self.scaling})"
        )


def rope_inv_freq(head_dim: int, theta: float, scaling: RopeScaling | None) -> tuple[torch.Tensor, float]:
    """HF `rope_utils`' inverse frequencies for `scaling`, and the attention factor."""
    base = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    if scaling is None:
        return base, 1.0
    if isinstance(scaling, LinearRopeScaling):
        return base / scaling.factor, 1.0
    if isinstance(scaling, Llama3RopeScaling):
        return _llama3_inv_freq(base, scaling), 1.0
    if isinstance(scaling, YarnRopeScaling):
        return _yarn_inv_freq(head_dim, theta, scaling)
    raise ValueError(
        f"RotaryEmbedding: scaling must be LinearRopeScaling, Llama3RopeScaling or YarnRopeScaling, "
        f"got {type(scaling).__name__}"
    )


def _llama3_inv_freq(inv_freq: torch.Tensor, s: Llama3RopeScaling) -> torch.Tensor:
    low_freq_wavelen = s.original_max_position / s.low_freq_factor
    high_freq_wavelen = s.original_max_position / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (s.original_max_position / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _yarn_inv_freq(head_dim: int, theta: float, s: YarnRopeScaling) -> tuple[torch.Tensor, float]:
    attention_factor = s.attention_factor
    if attention_factor is None:
        if s.mscale and s.mscale_all_dim:
            attention_factor = _yarn_mscale(s.factor, s.mscale) / _yarn_mscale(s.factor, s.mscale_all_dim)
        else:
            attention_factor = _yarn_mscale(s.factor)

    def correction_dim(rotations: float) -> float:
        return (
            head_dim * math.log(s.original_max_position / (rotations * 2 * math.pi)) / (2 * math.log(theta))
        )

    low, high = correction_dim(s.beta_fast), correction_dim(s.beta_slow)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # HF: avoid a zero-width ramp
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
    extrapolation_factor = 1 - ramp
    pos_freqs = theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (s.factor * pos_freqs)
    inv_freq = interpolation * (1 - extrapolation_factor) + extrapolation * extrapolation_factor
    return inv_freq, float(attention_factor)


def rope_scaling_from_hf(
    rope_scaling: dict | None, max_position_embeddings: int | None = None
) -> RopeScaling | None:
    """The scaling of a HF `config.json` `rope_scaling` entry (`rope_type` or `type`).

    Args:
        rope_scaling: The entry, or None.
        max_position_embeddings: The config's value, YaRN's default original length.

    Raises:
        ValueError: An unsupported `rope_type`, naming it and the allowed ones.
    """
    if not rope_scaling:
        return None
    kind = rope_scaling.get("rope_type", rope_scaling.get("type"))
    if kind == "default":
        return None
    if kind == "linear":
        return LinearRopeScaling(float(rope_scaling["factor"]))
    if kind == "llama3":
        return Llama3RopeScaling(
            float(rope_scaling["factor"]),
            float(rope_scaling["low_freq_factor"]),
            float(rope_scaling["high_freq_factor"]),
            int(rope_scaling["original_max_position_embeddings"]),
        )
    if kind == "yarn":
        original = rope_scaling.get("original_max_position_embeddings") or max_position_embeddings
        if original is None:
            raise ValueError(
                "rope_scaling: yarn needs original_max_position_embeddings or max_position_embeddings"
            )
        return YarnRopeScaling(
            float(rope_scaling["factor"]),
            int(original),
            beta_fast=float(rope_scaling.get("beta_fast") or 32.0),
            beta_slow=float(rope_scaling.get("beta_slow") or 1.0),
            mscale=rope_scaling.get("mscale"),
            mscale_all_dim=rope_scaling.get("mscale_all_dim"),
            attention_factor=rope_scaling.get("attention_factor"),
            truncate=bool(rope_scaling.get("truncate", True)),
        )
    raise ValueError(
        f"rope_scaling: rope_type={kind!r} is not supported; allowed: ['default', 'linear', 'llama3', 'yarn']"
    )
