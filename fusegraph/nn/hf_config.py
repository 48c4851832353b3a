"""`ModelConfig`: the decoder settings of a Hugging Face `config.json` (Llama, Mistral, Qwen2, Qwen3).

It reads both rope spellings: transformers 5's `rope_parameters` (with `rope_theta` inside it)
and the older top-level `rope_theta` + `rope_scaling`. Each error names the file and the field.

Example:
    >>> cfg = ModelConfig.from_file("llama-gptq/config.json")
    >>> cfg.model_type, cfg.num_hidden_layers, cfg.quantization
    ('llama', 32, QuantizationConfig(bits=4, group_size=128, ...))
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fusegraph.compiler import DType
from fusegraph.nn.checkpoint import CheckpointError
from fusegraph.nn.quant import QuantizationConfig
from fusegraph.nn.rotary import RopeScaling, rope_scaling_from_hf

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
_CHECKPOINT_FORMATS = ("gptq", "gptq_v2")
_DTYPES = {"float32": DType.float32, "float16": DType.float16, "bfloat16": DType.bfloat16}


class ModelLoadError(CheckpointError):
    """A model directory cannot be loaded; the message names the file and the tensor or field."""


@dataclass(frozen=True)
class ModelConfig:
    """What the decoder layers need from a HF `config.json`.

    Attributes:
        model_type: One of `SUPPORTED_MODEL_TYPES`.
        sliding_windows: Per layer: the attention window, or None for full attention.
        attention_bias: Biases on q/k/v (always for Qwen2, `attention_bias` for the others).
        use_qk_norm: Qwen3's per-head RMSNorm of q and k.
        dtype: The checkpoint's dtype (`dtype`/`torch_dtype`; float32 when absent).
        quantization: The GPTQ settings, or None for a dense checkpoint.
        source: The config file read (for error messages).
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: RopeScaling | None
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool
    mlp_bias: bool
    use_qk_norm: bool
    sliding_windows: tuple[int | None, ...]
    dtype: DType
    quantization: QuantizationConfig | None
    source: str = "config.json"

    @classmethod
    def from_file(cls, path: str | Path) -> ModelConfig:
        """Read `config.json` (and a `quantize_config.json` beside it, if any).

        Raises:
            ModelLoadError: The file is missing or not JSON, a field is missing or has an
                unsupported value (naming the file and the field).
        """
        file = Path(path)
        if not file.is_file():
            raise ModelLoadError(f"{file}: not found; a model directory needs a config.json")
        data = _read_json(file)
        quant_file = file.parent / "quantize_config.json"
        quant = _read_json(quant_file) if quant_file.is_file() else None
        return cls.from_dict(data, source=str(file), quantize_config=quant, quantize_source=str(quant_file))

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        source: str = "config.json",
        quantize_config: Mapping[str, Any] | None = None,
        quantize_source: str = "quantize_config.json",
    ) -> ModelConfig:
        """Build from a parsed `config.json` (see `from_file`)."""
        r = _Reader(data, source)
        model_type = r.string("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ModelLoadError(
                f"{source}: model_type={model_type!r} is not supported; supported: {list(SUPPORTED_MODEL_TYPES)}"
            )
        if (act := data.get("hidden_act", "silu")) != "silu":
            raise ModelLoadError(f"{source}: hidden_act={act!r} is not supported; allowed: ['silu']")
        hidden, heads = r.positive_int("hidden_size"), r.positive_int("num_attention_heads")
        layers = r.positive_int("num_hidden_layers")
        head_dim = data.get("head_dim") or (hidden // heads if heads and hidden % heads == 0 else None)
        if head_dim is None:
            raise ModelLoadError(
                f"{source}: no head_dim, and hidden_size ({hidden}) % num_attention_heads ({heads}) != 0"
            )
        theta, scaling = _rope(data, source)
        return cls(
            model_type=model_type,
            vocab_size=r.positive_int("vocab_size"),
            hidden_size=hidden,
            intermediate_size=r.positive_int("intermediate_size"),
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=int(data.get("num_key_value_heads") or heads),
            head_dim=int(head_dim),
            rms_norm_eps=float(data.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            rope_scaling=scaling,
            max_position_embeddings=int(data.get("max_position_embeddings", 4096)),
            tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
            attention_bias=model_type == "qwen2" or bool(data.get("attention_bias", False)),
            mlp_bias=bool(data.get("mlp_bias", False)),
            use_qk_norm=model_type == "qwen3",
            sliding_windows=_sliding_windows(data, model_type, layers, source),
            dtype=_dtype(data, source),
            quantization=_quantization(data, source, quantize_config, quantize_source),
            source=source,
        )


class _Reader:
    def __init__(self, data: Mapping[str, Any], source: str) -> None:
        self.data, self.source = data, source

    def _required(self, key: str) -> object:
        if key not in self.data:
            raise ModelLoadError(f"{self.source}: missing required field {key!r}")
        return self.data[key]

    def positive_int(self, key: str) -> int:
        value = self._required(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ModelLoadError(f"{self.source}: field {key!r} must be a positive int, got {value!r}")
        return value

    def string(self, key: str) -> str:
        value = self._required(key)
        if not isinstance(value, str):
            raise ModelLoadError(f"{self.source}: field {key!r} must be a string, got {value!r}")
        return value


def _read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{file}: cannot read JSON: {err}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{file}: expected a JSON object, got {type(data).__name__}")
    return data


def _rope(data: Mapping[str, Any], source: str) -> tuple[float, RopeScaling | None]:
    """`(theta, scaling)` from `rope_parameters` (transformers 5) or `rope_theta` + `rope_scaling`."""
    params = data.get("rope_parameters")
    if isinstance(params, Mapping) and "full_attention" in params:  # per-layer-type form
        params = params["full_attention"]
    if params:
        theta = params.get("rope_theta", data.get("rope_theta"))
        scaling_entry: Any = params
    else:
        theta, scaling_entry = data.get("rope_theta", 10000.0), data.get("rope_scaling")
    if theta is None:
        raise ModelLoadError(f"{source}: rope_parameters has no 'rope_theta'")
    for entry in (params, data.get("rope_scaling")):
        if entry and float(entry.get("partial_rotary_factor", 1.0)) != 1.0:
            raise ModelLoadError(f"{source}: partial_rotary_factor != 1 is not supported")
    if float(data.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ModelLoadError(f"{source}: partial_rotary_factor != 1 is not supported")
    try:
        scaling = rope_scaling_from_hf(
            scaling_entry, data.get("max_position_embeddings"), data.get("original_max_position_embeddings")
        )
    except (ValueError, KeyError, TypeError) as err:
        raise ModelLoadError(f"{source}: rope settings: {err}") from None
    return float(theta), scaling


def _sliding_windows(
    data: Mapping[str, Any], model_type: str, layers: int, source: str
) -> tuple[int | None, ...]:
    """Mistral: `sliding_window` on every layer. Qwen2/3: the layers whose `layer_types` entry
    is `sliding_attention` (derived from `use_sliding_window`/`max_window_layers` if absent)."""
    window = data.get("sliding_window")
    if model_type == "llama" or window is None:
        return (None,) * layers
    if model_type == "mistral":
        return (int(window),) * layers
    if not data.get("use_sliding_window", False):
        return (None,) * layers
    types = data.get("layer_types")
    if types is None:
        first = int(data.get("max_window_layers", layers))
        types = ["sliding_attention" if i >= first else "full_attention" for i in range(layers)]
    if len(types) != layers:
        raise ModelLoadError(f"{source}: layer_types has {len(types)} entries, num_hidden_layers is {layers}")
    return tuple(int(window) if t == "sliding_attention" else None for t in types)


def _dtype(data: Mapping[str, Any], source: str) -> DType:
    name = data.get("dtype") or data.get("torch_dtype") or "float32"
    if name not in _DTYPES:
        raise ModelLoadError(f"{source}: dtype={name!r} is not supported; allowed: {list(_DTYPES)}")
    return _DTYPES[name]


def parse_dtype(value: object) -> DType:
    """A DType from a DType, a torch.dtype or a name ("float16", "f16", "bf16", ...).

    Raises:
        ValueError: Not one of float32, float16, bfloat16.
    """
    if isinstance(value, DType):
        return value
    if isinstance(value, torch.dtype):
        value = str(value).removeprefix("torch.")
    aliases = {"f32": "float32", "fp32": "float32", "f16": "float16", "fp16": "float16", "half": "float16",
               "bf16": "bfloat16"}  # fmt: skip
    name = aliases.get(str(value), str(value))
    if name not in _DTYPES:
        raise ValueError(f"dtype={value!r} is not supported; allowed: {list(_DTYPES)}")
    return _DTYPES[name]


def _quantization(
    data: Mapping[str, Any], source: str, separate: Mapping[str, Any] | None, separate_source: str
) -> QuantizationConfig | None:
    """The GPTQ settings of `quantization_config` (GPTQModel, AutoGPTQ, transformers/optimum),
    else of a separate `quantize_config.json`, else None (dense)."""
    entry, where = data.get("quantization_config"), source
    if entry is None and separate is not None:
        entry, where = separate, separate_source
    if entry is None:
        return None
    if not isinstance(entry, Mapping):
        raise ModelLoadError(f"{where}: quantization_config must be an object, got {entry!r}")
    method = entry.get("quant_method", "gptq")
    if method != "gptq":
        raise ModelLoadError(
            f"{where}: quantization_config quant_method={method!r} is not handled; allowed: ['gptq']"
        )
    fmt = entry.get("checkpoint_format", entry.get("format", "gptq"))
    if fmt not in _CHECKPOINT_FORMATS:
        raise ModelLoadError(
            f"{where}: quantization_config checkpoint_format={fmt!r} is not handled; allowed: {list(_CHECKPOINT_FORMATS)}"
        )
    if (pack := entry.get("pack_dtype", "int32")) not in ("int32", "torch.int32"):
        raise ModelLoadError(
            f"{where}: quantization_config pack_dtype={pack!r} is not handled; allowed: ['int32']"
        )
    if entry.get("dynamic"):
        raise ModelLoadError(
            f"{where}: quantization_config 'dynamic' (per-module overrides) is not handled; "
            "only one bits/group_size for the whole model"
        )
    try:
        return QuantizationConfig.from_dict(entry)
    except ValueError as err:
        raise ModelLoadError(f"{where}: quantization_config: {err}") from None
