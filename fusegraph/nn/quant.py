"""`QuantizationConfig`: the GPTQ settings of a checkpoint or a layer.

Example:
    >>> cfg = QuantizationConfig(bits=4, group_size=128, desc_act=False, sym=True)
    >>> cfg.zero_format
    'v1'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

ALLOWED_BITS = (2, 3, 4, 8)
ALLOWED_FORMATS = ("gptq", "gptq_v2")
ALLOWED_METHODS = ("gptq",)


@dataclass(frozen=True)
class QuantizationConfig:
    """GPTQ quantization settings, as in AutoGPTQ/GPTQModel's `quantize_config.json`.

    Args:
        quant_method: Only "gptq".
        bits: Bits per weight: 2, 3, 4 or 8.
        group_size: Input rows sharing one scale and zero; -1 means one group for all rows.
        desc_act: Whether the checkpoint was quantized in activation order (its `g_idx` is a
            permutation of the groups rather than `k // group_size`).
        sym: Symmetric quantization (zero point 2^(bits-1)).
        checkpoint_format: "gptq" (v1: qzeros store z - 1) or "gptq_v2" (qzeros store z).

    Raises:
        ValueError: A field has a value outside the allowed ones; the message names both.
    """

    bits: int = 4
    group_size: int = 128
    desc_act: bool = False
    sym: bool = True
    checkpoint_format: str = "gptq"
    quant_method: str = "gptq"

    def __post_init__(self) -> None:
        _check_choice("quant_method", self.quant_method, ALLOWED_METHODS)
        _check_choice("bits", self.bits, ALLOWED_BITS)
        _check_choice("checkpoint_format", self.checkpoint_format, ALLOWED_FORMATS)
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int):
            raise ValueError(f"QuantizationConfig: group_size must be an int, got {self.group_size!r}")
        if self.group_size != -1 and self.group_size <= 0:
            raise ValueError(
                f"QuantizationConfig: group_size must be -1 or a positive int, got {self.group_size}"
            )
        for field in ("desc_act", "sym"):
            if not isinstance(value := getattr(self, field), bool):
                raise ValueError(f"QuantizationConfig: {field} must be True or False, got {value!r}")

    @property
    def zero_format(self) -> str:
        """The `zero_format` attribute of `fg.qmatmul.gptq`: "v1" or "v2"."""
        return "v2" if self.checkpoint_format == "gptq_v2" else "v1"

    def num_groups(self, in_features: int) -> int:
        """The number of scale/zero rows for a projection with `in_features` inputs."""
        return 1 if self.group_size == -1 else -(-in_features // self.group_size)

    def effective_group_size(self, in_features: int) -> int:
        """`group_size`, or `in_features` when it is -1."""
        return in_features if self.group_size == -1 else self.group_size

    def to_dict(self) -> dict[str, Any]:
        """The fields, as written to `quantize_config.json`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantizationConfig:
        """Read a `quantize_config.json` or a HF `quantization_config` entry.

        Unknown keys (`damp_percent`, `model_name_or_path`, ...) are ignored. GPTQModel's
        older `format` key is read as `checkpoint_format`.

        Raises:
            ValueError: A required key is missing or a value is not allowed.
        """
        missing = [k for k in ("bits", "group_size") if k not in data]
        if missing:
            raise ValueError(f"quantization config: missing required field(s) {missing}")
        return cls(
            quant_method=data.get("quant_method", "gptq"),
            bits=data["bits"],
            group_size=data["group_size"],
            desc_act=_json_bool("desc_act", data.get("desc_act", False)),
            sym=_json_bool("sym", data.get("sym", True)),
            checkpoint_format=data.get("checkpoint_format", data.get("format", "gptq")),
        )


def _json_bool(field: str, value: Any) -> bool:
    """A JSON flag: true/false, or the strings "true"/"false" some tools write (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"QuantizationConfig: {field} must be true or false, got {value!r}")


def _check_choice(field: str, value: Any, allowed: tuple[Any, ...]) -> None:
    kind = type(allowed[0])
    if isinstance(value, bool) or type(value) is not kind:
        raise ValueError(
            f"QuantizationConfig: {field} must be of type {kind.__name__}, got {value!r} "
            f"({type(value).__name__}); allowed: {list(allowed)}"
        )
    if value not in allowed:
        raise ValueError(f"QuantizationConfig: {field}={value!r} is not supported; allowed: {list(allowed)}")
