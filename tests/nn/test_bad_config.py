"""Bad configs, layer sizes and checkpoint files give a ValueError (CheckpointError) that names
the field or the file, never a raw library error or a silent wrong value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fusegraph import DeviceRef, DType
from fusegraph.nn import GPTQLinear, KVCacheParams, Linear, QuantizationConfig, RMSNorm
from fusegraph.nn.checkpoint import (
    CheckpointError,
    load_gptq_checkpoint,
    quantize_gptq_projections,
    save_gptq_checkpoint,
)

CFG = QuantizationConfig(bits=4, group_size=32, desc_act=True, sym=False)


@pytest.mark.parametrize("text, want", [("false", False), ("true", True), ("False", False), ("TRUE", True)])
def test_from_dict_reads_string_flags_by_their_meaning(text: str, want: bool) -> None:
    cfg = QuantizationConfig.from_dict({"bits": 4, "group_size": 32, "desc_act": text, "sym": text})
    assert cfg.desc_act is want and cfg.sym is want


@pytest.mark.parametrize("value", ["no", 0, 1, None])
def test_from_dict_refuses_other_flag_values_naming_the_field(value: object) -> None:
    with pytest.raises(ValueError, match=r"desc_act must be true or false"):
        QuantizationConfig.from_dict({"bits": 4, "group_size": 32, "desc_act": value})


@pytest.mark.parametrize("bits", [4.0, "4"])
def test_bits_must_be_an_int(bits: object) -> None:
    with pytest.raises(ValueError, match=r"bits must be of type int, got .*allowed: \[2, 3, 4, 8\]"):
        QuantizationConfig(bits=bits)  # type: ignore[arg-type]


def _kv(**changes: object) -> KVCacheParams:
    kw: dict[str, object] = dict(dtype=DType.float32, n_kv_heads=2, head_dim=16, num_layers=1, page_size=4)
    kw.update(changes)
    return KVCacheParams(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"dtype": "float32"}, r"dtype must be a float DType \(DType.float32, .*got 'float32'"),
        ({"dtype": DType.int32}, r"dtype must be a float DType"),
        ({"devices": ["cpu"]}, r"devices must hold DeviceRef values .*got 'cpu'"),
        ({"devices": "cpu"}, r"devices must be a non-empty list of DeviceRef"),
        ({"devices": []}, r"devices must be a non-empty list"),
    ],
)
def test_kv_cache_params_name_the_field(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=rf"KVCacheParams: {message}"):
        _kv(**changes)
    assert _kv(devices=(DeviceRef.CPU(),)).devices == [DeviceRef.CPU()]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Linear(-1, 4), r"Linear: in_dim must be a positive int, got -1"),
        (lambda: Linear(4, 2.0), r"Linear: out_dim must be a positive int, got 2.0"),  # type: ignore[arg-type]
        (lambda: GPTQLinear(0, 64, CFG), r"GPTQLinear: in_dim must be a positive int, got 0"),
        (lambda: GPTQLinear(64, 64, {"bits": 4}), r"GPTQLinear: quant_config must be"),  # type: ignore[arg-type]
        (lambda: RMSNorm(-3), r"RMSNorm: dim must be a positive int, got -3"),
        (lambda: RMSNorm(8, eps=float("nan")), r"RMSNorm: eps must be a finite float >= 0, got nan"),
    ],
)
def test_layer_sizes_are_checked(make, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=message):
        make()


# --- checkpoint files -------------------------------------------------------------------
@pytest.fixture
def tensors() -> dict[str, torch.Tensor]:
    weight = torch.randn(64, 128, generator=torch.Generator().manual_seed(0))
    return quantize_gptq_projections({"q_proj": weight}, CFG)


def _save(folder: Path, tensors: dict[str, torch.Tensor]) -> Path:
    return save_gptq_checkpoint(folder, tensors, CFG)


def test_a_good_checkpoint_loads(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    cfg, loaded = load_gptq_checkpoint(_save(tmp_path, tensors))
    assert cfg == CFG and torch.equal(loaded["q_proj.qweight"], tensors["q_proj.qweight"])


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: b"PK\x03\x04" + bytes(200), id="not-safetensors"),
    ],
)
def test_an_unreadable_safetensors_file_is_named(tmp_path: Path, tensors, damage) -> None:  # noqa: ANN001
    file = _save(tmp_path, tensors) / "model.safetensors"
    file.write_bytes(damage(file.read_bytes()))
    with pytest.raises(CheckpointError, match=rf"{file}: not a readable safetensors file"):
        load_gptq_checkpoint(tmp_path)


def test_bad_json_is_named(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    file = _save(tmp_path, tensors) / "quantize_config.json"
    file.write_text('{"bits": 4,')
    with pytest.raises(CheckpointError, match=rf"{file}: not valid JSON"):
        load_gptq_checkpoint(tmp_path)
    file.write_text(json.dumps([4]))
    with pytest.raises(CheckpointError, match=rf"{file}: expected a JSON object, got list"):
        load_gptq_checkpoint(tmp_path)


def test_a_short_qweight_is_blamed_on_qweight(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    tensors["q_proj.qweight"] = tensors["q_proj.qweight"][:-1].contiguous()
    with pytest.raises(
        CheckpointError, match=r"tensor 'q_proj.qweight': shape \[15, 64\], expected \[16, 64\]"
    ):
        load_gptq_checkpoint(_save(tmp_path, tensors))


def test_a_short_g_idx_is_blamed_on_g_idx(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    tensors["q_proj.g_idx"] = tensors["q_proj.g_idx"][:-1].contiguous()
    with pytest.raises(CheckpointError, match=r"tensor 'q_proj.g_idx': shape \[127\], expected \[128\]"):
        load_gptq_checkpoint(_save(tmp_path, tensors))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_scales_are_refused(tmp_path: Path, tensors: dict[str, torch.Tensor], bad: float) -> None:
    tensors["q_proj.scales"][2, 5] = bad
    with pytest.raises(
        CheckpointError, match=r"tensor 'q_proj.scales': scales must be finite, but entry \[2, 5\]"
    ):
        load_gptq_checkpoint(_save(tmp_path, tensors))
