"""Rope frequency scalings as transformers' `modeling_rope_utils` defines them, and the
reader of a HF `rope_scaling` / `rope_parameters` entry.

Static scalings change the table once: `LinearRopeScaling`, `Llama3RopeScaling`,
`YarnRopeScaling`. Two depend on each sequence's length after the step, as transformers'
`dynamic_rope_update` does (per sequence here; HF takes the batch's longest):

- `LongRopeScaling` (Phi-3 "longrope"): the short-factor table up to
  `original_max_position`, the long-factor one beyond, both times the attention factor;
- `DynamicNTKRopeScaling` ("dynamic"): the plain table up to `original_max_position`, beyond
  it a base grown with the length (computed in the op, see `ops/_rope_math.py`).

Every function takes R, the rotary width (`head_dim`, or fewer with partial rotary), as HF's
`dim = int(head_dim * partial_rotary_factor)`.

Example:
    >>> rope_scaling_from_hf({"rope_type": "dynamic", "factor": 2.0}, max_position_embeddings=4096)
    DynamicNTKRopeScaling(factor=2.0, original_max_position=4096)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch


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


@dataclass(frozen=True)
class DynamicNTKRopeScaling:
    """HF "dynamic": a sequence of length L > `original_max_position` uses the base
    `theta · (factor·L/original_max_position − (factor − 1))^(R/(R−2))` (HF's switch is the
    config's `max_position_embeddings`)."""

    factor: float
    original_max_position: int


@dataclass(frozen=True)
class LongRopeScaling:
    """HF "longrope" (Phi-3): `θi = 1 / (ext_i · theta^(2i/R))`, `ext` = `short_factor` for a
    sequence of length <= `original_max_position`, `long_factor` beyond, cos/sin times
    `attention_factor` (default `sqrt(1 + ln(factor)/ln(original_max_position))`, 1 when
    `factor <= 1`; `factor` defaults to `max_position_embeddings / original_max_position`)."""

    short_factor: tuple[float, ...]
    long_factor: tuple[float, ...]
    original_max_position: int
    factor: float = 1.0
    attention_factor: float | None = None

    @property
    def scale(self) -> float:
        """The attention factor both tables are multiplied by."""
        if self.attention_factor is not None:
            return float(self.attention_factor)
        if self.factor <= 1.0:
            return 1.0
        return math.sqrt(1 + math.log(self.factor) / math.log(self.original_max_position))


RopeScaling = (
    LinearRopeScaling | Llama3RopeScaling | YarnRopeScaling | DynamicNTKRopeScaling | LongRopeScaling
)
ALLOWED = ["default", "linear", "llama3", "yarn", "dynamic", "longrope"]


def rope_inv_freq(rotary_dim: int, theta: float, scaling: RopeScaling | None) -> tuple[torch.Tensor, float]:
    """HF `rope_utils`' inverse frequencies (float64, `rotary_dim // 2` of them) and the
    attention factor. For `LongRopeScaling` these are the short-factor ones; for
    `DynamicNTKRopeScaling` the unscaled ones (what a sequence within the original length uses)."""
    base = 1.0 / (theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim))
    if scaling is None or isinstance(scaling, DynamicNTKRopeScaling):
        return base, 1.0
    if isinstance(scaling, LinearRopeScaling):
        return base / scaling.factor, 1.0
    if isinstance(scaling, Llama3RopeScaling):
        return _llama3_inv_freq(base, scaling), 1.0
    if isinstance(scaling, YarnRopeScaling):
        return _yarn_inv_freq(rotary_dim, theta, scaling)
    if isinstance(scaling, LongRopeScaling):
        return longrope_inv_freq(rotary_dim, theta, scaling, long=False), scaling.scale
    raise ValueError(
        f"RotaryEmbedding: scaling must be one of {[t.__name__ for t in RopeScaling.__args__]}, "
        f"got {type(scaling).__name__}"
    )


def longrope_inv_freq(rotary_dim: int, theta: float, s: LongRopeScaling, *, long: bool) -> torch.Tensor:
    """The short (`long=False`) or long factor frequencies of a longrope scaling."""
    ext = torch.tensor(s.long_factor if long else s.short_factor, dtype=torch.float64)
    if ext.numel() != rotary_dim // 2:
        which = "long_factor" if long else "short_factor"
        raise ValueError(
            f"rope_scaling: longrope {which} has {ext.numel()} entries, expected rotary_dim/2 = {rotary_dim // 2}"
        )
    return 1.0 / (ext * theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim))


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


def _field(entry: Mapping[str, Any], kind: str, name: str) -> Any:
    if entry.get(name) is None:
        raise ValueError(f"rope_scaling: {kind} needs {name!r}")
    return entry[name]


def _original(entry: Mapping[str, Any], kind: str, max_position_embeddings: int | None) -> int:
    """HF `standardize_rope_params`: the config's top-level `original_max_position_embeddings`
    (Phi-3; merged into `entry` by the caller), else the entry's, else `max_position_embeddings`."""
    original = entry.get("original_max_position_embeddings") or max_position_embeddings
    if original is None:
        raise ValueError(
            f"rope_scaling: {kind} needs original_max_position_embeddings or max_position_embeddings"
        )
    return int(original)


def rope_scaling_from_hf(
    rope_scaling: Mapping[str, Any] | None,
    max_position_embeddings: int | None = None,
    original_max_position_embeddings: int | None = None,
) -> RopeScaling | None:
    """The scaling of a HF `config.json` `rope_scaling` entry (`rope_type` or `type`).

    Args:
        rope_scaling: The entry (or transformers 5's `rope_parameters`), or None.
        max_position_embeddings: The config's value: the default original length of llama3,
            yarn and longrope (as HF's `standardize_rope_params`), the switch of dynamic NTK,
            and longrope's default `factor` numerator.
        original_max_position_embeddings: A top-level config value (Phi-3 keeps it outside
            `rope_scaling`); as in HF's `standardize_rope_params`, it wins over the entry's for
            llama3, yarn and longrope.

    Raises:
        ValueError: An unsupported `rope_type` (naming it and the allowed ones), or a missing
            field (naming it).
    """
    if not rope_scaling:
        return None
    kind = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
    if kind == "default":
        return None
    if original_max_position_embeddings is not None and kind in ("llama3", "yarn", "longrope"):
        rope_scaling = {**rope_scaling, "original_max_position_embeddings": original_max_position_embeddings}
    if kind == "linear":
        return LinearRopeScaling(float(_field(rope_scaling, kind, "factor")))
    if kind == "llama3":
        return Llama3RopeScaling(
            float(_field(rope_scaling, kind, "factor")),
            float(_field(rope_scaling, kind, "low_freq_factor")),
            float(_field(rope_scaling, kind, "high_freq_factor")),
            _original(rope_scaling, kind, max_position_embeddings),
        )
    if kind == "yarn":
        return YarnRopeScaling(
            float(_field(rope_scaling, kind, "factor")),
            _original(rope_scaling, kind, max_position_embeddings),
            beta_fast=float(rope_scaling.get("beta_fast") or 32.0),
            beta_slow=float(rope_scaling.get("beta_slow") or 1.0),
            mscale=rope_scaling.get("mscale"),
            mscale_all_dim=rope_scaling.get("mscale_all_dim"),
            attention_factor=rope_scaling.get("attention_factor"),
            truncate=bool(rope_scaling.get("truncate", True)),
        )
    if kind == "dynamic":
        if max_position_embeddings is None:
            raise ValueError("rope_scaling: dynamic needs max_position_embeddings (its switch length)")
        return DynamicNTKRopeScaling(
            float(_field(rope_scaling, kind, "factor")), int(max_position_embeddings)
        )
    if kind == "longrope":
        original = _original(rope_scaling, kind, max_position_embeddings)
        factor = rope_scaling.get("factor")
        if factor is None:
            factor = (max_position_embeddings or original) / original
        attention = rope_scaling.get("attention_factor")
        return LongRopeScaling(
            _floats(_field(rope_scaling, kind, "short_factor")),
            _floats(_field(rope_scaling, kind, "long_factor")),
            original,
            float(factor),
            None if attention is None else float(attention),
        )
    raise ValueError(f"rope_scaling: rope_type={kind!r} is not supported; allowed: {ALLOWED}")


def _floats(values: Sequence[Any]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)
