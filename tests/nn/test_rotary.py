"""RotaryEmbedding tables against the formulas (written out here, independently of rotary.py)."""

import math
from typing import cast

import pytest
import torch

from fusegraph import DType, Graph, TensorType
from fusegraph.nn import (
    DynamicNTKRopeScaling,
    LinearRopeScaling,
    Llama3RopeScaling,
    LongRopeScaling,
    RotaryEmbedding,
    YarnRopeScaling,
)


def _plain_inv_freq(d, theta):
    return [1.0 / theta ** (2 * i / d) for i in range(d // 2)]


def _table_from(inv_freq, max_pos, factor=1.0):
    rows = []
    for p in range(max_pos):
        row = []
        for f in inv_freq:
            row += [math.cos(f * p) * factor, math.sin(f * p) * factor]
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float32)


def test_table__row_p_is_cos_sin_pairs_of_theta_times_p():
    rope = RotaryEmbedding(dim=64, n_heads=4, theta=10000.0, max_seq_len=40)
    want = _table_from(_plain_inv_freq(16, 10000.0), 40)
    torch.testing.assert_close(rope.table(), want, rtol=0, atol=1e-6)


def test_linear_scaling__divides_every_frequency():
    rope = RotaryEmbedding(64, 4, 500.0, 16, scaling=LinearRopeScaling(4.0))
    want = _table_from([f / 4.0 for f in _plain_inv_freq(16, 500.0)], 16)
    torch.testing.assert_close(rope.table(), want, rtol=0, atol=1e-6)


def test_llama3_scaling__low_scaled_high_kept_medium_smoothed():
    factor, low, high, orig = 8.0, 1.0, 4.0, 64
    rope = RotaryEmbedding(128, 4, 10000.0, 8, scaling=Llama3RopeScaling(factor, low, high, orig))
    want = []
    for f in _plain_inv_freq(32, 10000.0):
        wavelen = 2 * math.pi / f
        if wavelen < orig / high:
            want.append(f)
        elif wavelen > orig / low:
            want.append(f / factor)
        else:
            smooth = (orig / wavelen - low) / (high - low)
            want.append((1 - smooth) * f / factor + smooth * f)
    got, attention_factor = rope.inv_freq()
    kinds = {"kept": 0, "scaled": 0, "smoothed": 0}
    for f, w in zip(_plain_inv_freq(32, 10000.0), want):
        kinds["kept" if w == f else "scaled" if w == f / factor else "smoothed"] += 1
    assert all(kinds.values()), f"test must cover all three regimes, got {kinds}"
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))
    assert attention_factor == 1.0


def test_yarn_scaling__ramp_blend_and_attention_factor():
    d, theta, factor, orig = 32, 10000.0, 4.0, 64
    rope = RotaryEmbedding(128, 4, theta, 8, scaling=YarnRopeScaling(factor, orig))

    def corr(rot):
        return d * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(theta))

    low, high = max(math.floor(corr(32.0)), 0), min(math.ceil(corr(1.0)), d - 1)
    want = []
    for i, f in enumerate(_plain_inv_freq(d, theta)):
        ramp = min(max((i - low) / (high - low), 0.0), 1.0)
        extra = 1 - ramp  # 1 = keep the original frequency
        want.append(f / factor * (1 - extra) + f * extra)
    got, af = rope.inv_freq()
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))
    assert af == pytest.approx(0.1 * math.log(factor) + 1.0)
    torch.testing.assert_close(rope.table(), _table_from(want, 8, af), rtol=0, atol=1e-6)


def test_freqs_cis__adds_one_named_weight_to_the_current_graph():
    rope = RotaryEmbedding(dim=64, n_heads=4, theta=10000.0, max_seq_len=32)
    with Graph("g", input_types=[TensorType(DType.float32, [2], rope.device)]) as g:
        a, b = rope.freqs_cis, rope.freqs_cis
        g.output(a)
    assert a == b
    assert list(g.weights) == ["rope.freqs_cis"]
    assert [int(d) for d in g.weights["rope.freqs_cis"].shape] == [32, 16]
    assert set(rope.state_dict()) == {"rope.freqs_cis"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dim=64, n_heads=5), "divisible by n_heads"),
        (dict(dim=64, n_heads=4, head_dim=15), "head_dim must be positive and even"),
    ],
)
def test_rope__bad_dims_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RotaryEmbedding(theta=1e4, max_seq_len=8, **kwargs)


def test_rope_scaling_from_hf__reads_each_rope_type():
    from fusegraph.nn import rope_scaling_from_hf

    llama3 = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    assert rope_scaling_from_hf(llama3) == Llama3RopeScaling(8.0, 1.0, 4.0, 8192)
    assert rope_scaling_from_hf({"type": "linear", "factor": 2}) == LinearRopeScaling(2.0)
    assert rope_scaling_from_hf({"rope_type": "yarn", "factor": 4}, 4096) == YarnRopeScaling(4.0, 4096)
    assert rope_scaling_from_hf(None) is None
    assert rope_scaling_from_hf({"rope_type": "dynamic", "factor": 2}, 64) == DynamicNTKRopeScaling(2.0, 64)
    longrope = {"rope_type": "longrope", "short_factor": [1, 2], "long_factor": [3, 4]}
    assert rope_scaling_from_hf({**longrope, "original_max_position_embeddings": 16}, 64) == LongRopeScaling(
        (1.0, 2.0), (3.0, 4.0), 16, 4.0, None
    )
    with pytest.raises(
        ValueError,
        match=r"rope_type='su' is not supported; allowed: \['default', 'linear', 'llama3', 'yarn', 'dynamic', 'longrope'\]",
    ):
        rope_scaling_from_hf({"rope_type": "su", "factor": 2})
    phi3 = {**longrope, "original_max_position_embeddings": 16}
    scaled = cast(LongRopeScaling, rope_scaling_from_hf(phi3, 64, original_max_position_embeddings=32))
    assert scaled.original_max_position == 32
    with pytest.raises(ValueError, match=r"rope_scaling: dynamic needs max_position_embeddings"):
        rope_scaling_from_hf({"rope_type": "dynamic", "factor": 2})
    with pytest.raises(ValueError, match=r"rope_scaling: llama3 needs 'low_freq_factor'"):
        rope_scaling_from_hf({"rope_type": "llama3", "factor": 2})


def test_llama3_without_original_max__falls_back_to_max_position_embeddings_as_hf():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from fusegraph.nn import rope_scaling_from_hf

    entry = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
    scaling = rope_scaling_from_hf(dict(entry), max_position_embeddings=256)
    assert scaling == Llama3RopeScaling(8.0, 1.0, 4.0, 256)
    config = LlamaConfig(
        hidden_size=256, num_attention_heads=2, max_position_embeddings=256,
        rope_parameters={**entry, "rope_theta": 10000.0},
    )  # fmt: skip
    assert cast(dict, config.rope_parameters)["original_max_position_embeddings"] == 256  # HF's own fallback
    want, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    got, _ = RotaryEmbedding(256, 2, 10000.0, 8, scaling=scaling).inv_freq()
    torch.testing.assert_close(got.float(), want, rtol=1e-6, atol=0)
    with pytest.raises(
        ValueError, match="llama3 needs original_max_position_embeddings or max_position_embeddings"
    ):
        rope_scaling_from_hf(dict(entry))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(theta=0.0), "theta must be a finite number > 0, got theta=0.0"),
        (dict(theta=-1.0), "theta must be a finite number > 0, got theta=-1.0"),
        (dict(theta=float("nan")), "theta must be a finite number > 0, got theta=nan"),
        (dict(rotary_dim=7), r"rotary_dim must be an even int in \[2, head_dim=16\], got 7"),
        (dict(rotary_dim=32), r"rotary_dim must be an even int in \[2, head_dim=16\], got 32"),
        (dict(partial_rotary_factor=0.0), r"partial_rotary_factor must be in \(0, 1\], got 0.0"),
        (dict(rotary_dim=8, partial_rotary_factor=0.5), "not both"),
        (dict(n_heads=4.0), "must be divisible by n_heads"),
    ],
)
def test_rope__bad_settings_name_the_field(kwargs, match):
    args = dict(dim=64, n_heads=4, theta=1e4, max_seq_len=8) | kwargs
    with pytest.raises(ValueError, match=match):
        RotaryEmbedding(**args)


@pytest.mark.parametrize(
    ("kwargs", "rotary_dim"), [(dict(rotary_dim=6), 6), (dict(partial_rotary_factor=0.4), 6)]
)
def test_partial_rotary__table_holds_rotary_dim_columns_of_the_rotary_dim_frequencies(kwargs, rotary_dim):
    rope = RotaryEmbedding(64, 4, 500.0, 12, **kwargs)
    assert rope.rotary_dim == rotary_dim  # int(16 * 0.4) = 6, as HF
    torch.testing.assert_close(
        rope.table(), _table_from(_plain_inv_freq(rotary_dim, 500.0), 12), rtol=0, atol=1e-6
    )


def test_longrope__stacks_short_then_long_tables_times_the_attention_factor():
    short, long_, orig = (1.0, 2.0, 4.0), (3.0, 5.0, 8.0), 16
    rope = RotaryEmbedding(24, 4, 100.0, 10, scaling=LongRopeScaling(short, long_, orig, factor=4.0))
    af = math.sqrt(1 + math.log(4.0) / math.log(orig))
    plain = _plain_inv_freq(6, 100.0)
    want_short = _table_from([f / e for f, e in zip(plain, short)], 10, af)
    want_long = _table_from([f / e for f, e in zip(plain, long_)], 10, af)
    torch.testing.assert_close(rope.table(), torch.cat([want_short, want_long]), rtol=0, atol=1e-6)
    assert rope.variant.long_after == orig and rope.variant.tables == 2
