"""Every malformed model directory gives a `ModelLoadError` naming the file and the tensor or field;
the accepted variants (shards, quantize_config.json, transformers' config form) load."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from fusegraph.nn import ModelLoadError, load_model


@pytest.fixture
def gptq_dir(llama_gptq: tuple[Path, Any], tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(llama_gptq[0], folder)
    return folder


def _edit_config(folder: Path, edit: Callable[[dict[str, Any]], None], name: str = "config.json") -> None:
    config = json.loads((folder / name).read_text())
    edit(config)
    (folder / name).write_text(json.dumps(config))


def _shard(folder: Path, duplicate: str | None = None) -> list[str]:
    """Split model.safetensors into two shards + index; optionally put `duplicate` in both."""
    tensors = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for file, part in halves.items():
        extra = [duplicate] if duplicate and duplicate not in part else []
        save_file({n: tensors[n] for n in part + extra}, str(folder / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    return list(halves)


def test_load__sharded_index_equals_single_file(gptq_dir: Path) -> None:
    single = load_model(gptq_dir, dtype="float32").state_dict()
    _shard(gptq_dir)
    sharded = load_model(gptq_dir, dtype="float32").state_dict()
    assert single.keys() == sharded.keys()
    assert all(torch.equal(single[n], sharded[n]) for n in single)


def test_load__quantize_config_json_alone_and_transformers_form(gptq_dir: Path) -> None:
    expected = load_model(gptq_dir, dtype="float32").state_dict()
    _edit_config(gptq_dir, lambda c: c.pop("quantization_config"))  # AutoGPTQ: only quantize_config.json
    assert load_model(gptq_dir, dtype="float32").state_dict().keys() == expected.keys()
    optimum = {"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": True, "sym": False,
               "damp_percent": 0.1, "use_exllama": True, "tokenizer": None, "dataset": None,
               "exllama_config": {"version": 1}, "cache_block_outputs": True}  # fmt: skip
    (gptq_dir / "quantize_config.json").unlink()
    _edit_config(gptq_dir, lambda c: c.update(quantization_config=optimum))
    assert load_model(gptq_dir, dtype="float32").state_dict().keys() == expected.keys()


BAD_CONFIGS = {
    "model_type": (
        lambda c: c.update(model_type="gpt2"),
        ["config.json", "'gpt2'", "llama", "mistral", "qwen2", "qwen3"],
    ),
    "quant_method": (
        lambda c: c["quantization_config"].update(quant_method="awq"),
        ["config.json", "quant_method='awq'", "['gptq']"],
    ),
    "checkpoint_format": (
        lambda c: c["quantization_config"].update(checkpoint_format="marlin"),
        ["config.json", "checkpoint_format='marlin'"],
    ),
    "dynamic": (
        lambda c: c["quantization_config"].update(dynamic={"-:.*mlp.*": {}}),
        ["config.json", "'dynamic'"],
    ),
    "bits": (lambda c: c["quantization_config"].update(bits=5), ["config.json", "bits=5", "[2, 3, 4, 8]"]),
    "missing_field": (lambda c: c.pop("hidden_size"), ["config.json", "'hidden_size'"]),
    "rope_type": (
        lambda c: c.update(rope_parameters={"rope_type": "weird", "rope_theta": 1.0}),
        ["config.json", "weird"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_load__bad_config_names_file_and_field(gptq_dir: Path, case: str) -> None:
    edit, needles = BAD_CONFIGS[case]
    _edit_config(gptq_dir, edit)
    with pytest.raises(ModelLoadError) as err:
        load_model(gptq_dir)
    assert all(n in str(err.value) for n in needles), str(err.value)


def test_load__shape_disagreeing_with_config_names_file_tensor_and_field(gptq_dir: Path) -> None:
    _edit_config(gptq_dir, lambda c: c.update(intermediate_size=96))
    with pytest.raises(ModelLoadError, match=r"model\.safetensors: tensor 'model\.layers\.0\.mlp\.gate_proj\.qweight' "
                       r"has shape \[8, 128\].*implies \[8, 96\].*intermediate_size=96"):  # fmt: skip
        load_model(gptq_dir)


def test_load__missing_tensor_is_named(gptq_dir: Path) -> None:
    tensors = load_file(str(gptq_dir / "model.safetensors"))
    del tensors["model.layers.1.self_attn.o_proj.scales"]
    save_file(tensors, str(gptq_dir / "model.safetensors"))
    with pytest.raises(
        ModelLoadError, match=r"tensor 'model\.layers\.1\.self_attn\.o_proj\.scales' not found"
    ):
        load_model(gptq_dir)


def test_load__missing_shard_is_named(gptq_dir: Path) -> None:
    first, _ = _shard(gptq_dir)
    (gptq_dir / first).unlink()
    with pytest.raises(
        ModelLoadError, match=rf"index\.json: shard '{first}' \(holding e\.g\. tensor '.*'\) is missing"
    ):
        load_model(gptq_dir)


def test_load__tensor_in_two_shards_names_both_files(gptq_dir: Path) -> None:
    first, second = _shard(gptq_dir, duplicate="model.norm.weight")
    with pytest.raises(ModelLoadError) as err:
        load_model(gptq_dir)
    assert "'model.norm.weight' is in two files" in str(err.value)
    assert first in str(err.value) and second in str(err.value)


def test_load__pickled_weights_are_refused_not_loaded(gptq_dir: Path) -> None:
    (gptq_dir / "model.safetensors").rename(gptq_dir / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"no model\.safetensors.*pytorch_model\.bin.*never loaded"):
        load_model(gptq_dir)


def test_load__gptq_tensors_without_quantization_config(gptq_dir: Path) -> None:
    _edit_config(gptq_dir, lambda c: c.pop("quantization_config"))
    (gptq_dir / "quantize_config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"GPTQ-packed, but .*config\.json has no quantization_config"):
        load_model(gptq_dir)


def test_load__act_order_g_idx_under_desc_act_false_is_named(gptq_dir: Path) -> None:
    for name in ("config.json", "quantize_config.json"):
        key = "quantization_config"
        _edit_config(gptq_dir, lambda c: c.get(key, c).update(desc_act=False), name)
    with pytest.raises(
        ModelLoadError, match=r"model\.safetensors: tensor 'model\.layers\.0\.self_attn\.q_proj\.g_idx'"
    ):
        load_model(gptq_dir)


def test_load__unexpected_tensor_is_named(gptq_dir: Path) -> None:
    tensors = load_file(str(gptq_dir / "model.safetensors"))
    tensors["model.layers.0.self_attn.o_proj.bias"] = torch.zeros(64)
    save_file(tensors, str(gptq_dir / "model.safetensors"))
    with pytest.raises(
        ModelLoadError, match=r"unexpected tensor 'model\.layers\.0\.self_attn\.o_proj\.bias'"
    ):
        load_model(gptq_dir)
