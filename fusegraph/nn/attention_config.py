"""Constructor checks shared by `AttentionWithRope` and `GPTQAttentionWithRope`, and the mask.

`MHAMaskVariant` names MAX's mask kinds this layer builds: `CAUSAL_MASK` and
`SLIDING_WINDOW_CAUSAL_MASK` (a query at position `p` sees keys `p - sliding_window + 1 .. p`,
HF's `kv_idx > q_idx - sliding_window` for Mistral, Qwen2 `use_sliding_window`, Gemma 2/3).
`resolve_mask(mask_variant, sliding_window)` turns the two constructor arguments into the
window `fg.attention.paged` takes (None: plain causal).

Example:
    >>> resolve_mask(None, 4096)
    4096
    >>> resolve_mask(MHAMaskVariant.CAUSAL_MASK, None) is None
    True
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fusegraph.nn.kv_cache import KVCacheParams
    from fusegraph.nn.rotary import RotaryEmbedding


class MHAMaskVariant(StrEnum):
    """The attention masks the layers build (MAX's names; string values as MAX's
    `AttentionMaskVariant`)."""

    CAUSAL_MASK = "causal"
    SLIDING_WINDOW_CAUSAL_MASK = "sliding_window_causal"


_MASKS = [m.value for m in MHAMaskVariant]


def resolve_mask(mask_variant: Any, sliding_window: Any) -> int | None:
    """The sliding window `fg.attention.paged` gets, checking the two arguments agree.

    `mask_variant=None` follows `sliding_window` (causal without one, sliding-window causal
    with one). An explicit `CAUSAL_MASK` with a window, or `SLIDING_WINDOW_CAUSAL_MASK`
    without one, is refused rather than guessed.

    Raises:
        ValueError: `sliding_window` is not a positive int or None; `mask_variant` is not one of
            the allowed values; the two contradict each other.
    """
    if sliding_window is not None and (
        isinstance(sliding_window, bool) or not isinstance(sliding_window, int) or sliding_window < 1
    ):
        raise ValueError(f"attention: sliding_window must be a positive int or None, got {sliding_window!r}")
    if mask_variant is None:
        return sliding_window
    try:
        variant = MHAMaskVariant(mask_variant)
    except ValueError:
        raise ValueError(
            f"attention: mask_variant must be one of {_MASKS} (or None), got {mask_variant!r}"
        ) from None
    if variant is MHAMaskVariant.CAUSAL_MASK and sliding_window is not None:
        raise ValueError(
            f"attention: mask_variant={variant.value!r} contradicts sliding_window={sliding_window}; "
            f"use mask_variant='sliding_window_causal' (or None)"
        )
    if variant is MHAMaskVariant.SLIDING_WINDOW_CAUSAL_MASK and sliding_window is None:
        raise ValueError(
            "attention: mask_variant='sliding_window_causal' needs sliding_window (a positive int)"
        )
    return sliding_window


def check_positive_int(field: str, value: object) -> int:
    """`value` if it is a positive int (not a bool, float or string), else a ValueError naming `field`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"attention: {field} must be a positive int, got {value!r}")
    return value


def check_scale(scale: object) -> float | None:
    """The attention scale: None (default `1/sqrt(head_dim)`) or a finite float > 0."""
    if scale is None:
        return None
    if (
        isinstance(scale, bool)
        or not isinstance(scale, int | float)
        or not math.isfinite(scale)
        or scale <= 0
    ):
        raise ValueError(f"attention: scale must be a finite number > 0 (or None), got {scale!r}")
    return float(scale)


def validate_heads(
    rope: RotaryEmbedding, n_heads: object, n_kv_heads: object, hidden_size: object, kv_params: KVCacheParams
) -> None:
    """The construction checks shared by both attention layers; each error names the fields."""
    n_heads = check_positive_int("num_attention_heads", n_heads)
    n_kv_heads = check_positive_int("num_key_value_heads", n_kv_heads)
    hidden_size = check_positive_int("hidden_size", hidden_size)
    if n_heads % n_kv_heads:
        raise ValueError(
            f"attention: num_attention_heads ({n_heads}) must be divisible by num_key_value_heads ({n_kv_heads})"
        )
    if n_kv_heads != kv_params.n_kv_heads:
        raise ValueError(
            f"attention: num_key_value_heads ({n_kv_heads}) != kv_params.n_kv_heads ({kv_params.n_kv_heads})"
        )
    head_dim = kv_params.head_dim
    if head_dim % 2:
        raise ValueError(
            f"attention: head_dim must be even for rope, got head_dim={head_dim} (kv_params.head_dim)"
        )
    if rope.head_dim != head_dim:
        raise ValueError(f"attention: rope.head_dim ({rope.head_dim}) != kv_params.head_dim ({head_dim})")
    if rope.head_dim_implied and hidden_size != n_heads * head_dim:
        raise ValueError(
            f"attention: hidden_size ({hidden_size}) != num_attention_heads ({n_heads}) * head_dim ({head_dim}); "
            f"head_dim is implied by the rope (dim // n_heads), pass RotaryEmbedding(head_dim=...) to decouple"
        )
