"""`ModelConfig` from config.json dicts: rope spellings, sliding windows, dtypes, GPTQ entries."""

from __future__ import annotations

from typing import Any

import pytest

from fusegraph.compiler import DType
from fusegraph.nn import Llama3RopeScaling, ModelConfig, ModelLoadError, QuantizationConfig

BASE: dict[str, Any] = dict(
    vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=128,
)  # fmt: skip
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 32}  # fmt: skip


def test_config__rope_parameters_and_older_rope_theta_rope_scaling_agree() -> None:
    new = ModelConfig.from_dict(
        {**BASE, "model_type": "llama", "rope_parameters": {**LLAMA3, "rope_theta": 5e5}}
    )
    old = ModelConfig.from_dict({**BASE, "model_type": "llama", "rope_theta": 5e5, "rope_scaling": LLAMA3})
    assert new.rope_theta == old.rope_theta == 5e5
    assert new.rope_scaling == old.rope_scaling == Llama3RopeScaling(8.0, 1.0, 4.0, 32)
    default = ModelConfig.from_dict({**BASE, "model_type": "llama"})
    assert (default.rope_theta, default.rope_scaling) == (10000.0, None)


def test_config__sliding_windows_per_family() -> None:
    mistral = ModelConfig.from_dict({**BASE, "model_type": "mistral", "sliding_window": 6})
    assert mistral.sliding_windows == (6, 6)
    qwen2 = {
        **BASE,
        "model_type": "qwen2",
        "sliding_window": 4,
        "use_sliding_window": True,
        "max_window_layers": 1,
    }
    assert ModelConfig.from_dict(qwen2).sliding_windows == (None, 4)
    types = {**qwen2, "layer_types": ["sliding_attention", "full_attention"]}
    assert ModelConfig.from_dict(types).sliding_windows == (4, None)
    assert ModelConfig.from_dict({**qwen2, "use_sliding_window": False}).sliding_windows == (None, None)


def test_config__family_flags_dtype_and_quantization() -> None:
    qwen2 = ModelConfig.from_dict({**BASE, "model_type": "qwen2", "torch_dtype": "bfloat16"})
    assert qwen2.attention_bias and not qwen2.use_qk_norm and qwen2.dtype == DType.bfloat16
    quant = {"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": True, "sym": False}
    qwen3 = ModelConfig.from_dict(
        {**BASE, "model_type": "qwen3", "head_dim": 32, "quantization_config": quant}
    )
    assert qwen3.use_qk_norm and qwen3.head_dim == 32 and qwen3.dtype == DType.float32
    assert qwen3.quantization == QuantizationConfig(bits=4, group_size=32, desc_act=True, sym=False)
    separate = ModelConfig.from_dict({**BASE, "model_type": "llama"}, quantize_config=quant)
    assert separate.quantization == qwen3.quantization


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"hidden_act": "gelu"}, "hidden_act='gelu' is not supported; allowed: ['silu']"),
        ({"dtype": "float64"}, "dtype='float64' is not supported"),
        ({"num_hidden_layers": 0}, "field 'num_hidden_layers' must be a positive int"),
        ({"partial_rotary_factor": 0.5}, "partial_rotary_factor != 1 is not supported"),
        (
            {
                "quantization_config": {
                    "quant_method": "gptq",
                    "bits": 4,
                    "group_size": 32,
                    "pack_dtype": "int16",
                }
            },
            "pack_dtype='int16' is not handled",
        ),  # fmt: skip
    ],
)
def test_config__unsupported_values_name_the_field(change: dict[str, Any], needle: str) -> None:
    with pytest.raises(ModelLoadError, match="my/config.json: ") as err:
        ModelConfig.from_dict({**BASE, "model_type": "llama", **change}, source="my/config.json")
    assert needle in str(err.value)
