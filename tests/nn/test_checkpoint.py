"""GPTQ checkpoint IO: quantize -> save -> load round trip, and the errors."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from fusegraph.nn import (
    CheckpointError,
    QuantizationConfig,
    load_gptq_checkpoint,
    quantize_gptq,
    quantize_gptq_projections,
    save_gptq_checkpoint,
)
from fusegraph.ops.gptq_packing import dequantize

CFG = QuantizationConfig(bits=4, group_size=16, desc_act=True, sym=False)


def _ckpt(tmp_path, cfg=CFG, hf_config=False):
    torch.manual_seed(0)
    weights = {
        "layers.0.self_attn.q_proj": torch.randn(32, 64),
        "layers.0.self_attn.o_proj": torch.randn(64, 32),
    }
    tensors = quantize_gptq_projections(weights, cfg)
    save_gptq_checkpoint(tmp_path, tensors, cfg, hf_config=hf_config)
    return weights, tensors


@pytest.mark.parametrize("hf_config", [False, True])
def test_checkpoint__quantize_save_load_round_trips(tmp_path, hf_config):
    weights, tensors = _ckpt(tmp_path, hf_config=hf_config)
    cfg, loaded = load_gptq_checkpoint(tmp_path)
    assert cfg == CFG
    assert loaded.keys() == tensors.keys()
    for name, t in tensors.items():
        assert torch.equal(loaded[name], t), name
    # the stored tensors dequantize to the weight within half a quantization step
    p = "layers.0.self_attn.q_proj"
    w = dequantize(
        *(loaded[f"{p}.{s}"] for s in ("qweight", "scales", "qzeros", "g_idx")),
        bits=4,
        group_size=16,
        sym=False,
        zero_format="v1",
    )
    step = loaded[f"{p}.scales"].float().max()
    assert (w - weights[p].t()).abs().max() <= step / 2 + 1e-6


def test_checkpoint__prefix_selects_and_strips(tmp_path):
    _ckpt(tmp_path)
    _, loaded = load_gptq_checkpoint(tmp_path, prefix="layers.0.self_attn.")
    assert sorted(loaded) == sorted(
        f"{p}_proj.{s}" for p in "qo" for s in ("g_idx", "qweight", "qzeros", "scales")
    )


def _corrupt(tmp_path, fn):
    tensors = load_file(str(tmp_path / "model.safetensors"))
    fn(tensors)
    save_file(tensors, str(tmp_path / "model.safetensors"))


def test_checkpoint__wrong_shape_names_the_tensor(tmp_path):
    _ckpt(tmp_path)
    _corrupt(
        tmp_path,
        lambda t: t.update({"layers.0.self_attn.q_proj.scales": torch.zeros(3, 32, dtype=torch.float16)}),
    )
    with pytest.raises(
        CheckpointError, match=r"'layers.0.self_attn.q_proj.scales': shape \[3, 32\], expected \[4, 32\]"
    ):
        load_gptq_checkpoint(tmp_path)


def test_checkpoint__missing_g_idx_names_the_tensor(tmp_path):
    _ckpt(tmp_path)
    _corrupt(tmp_path, lambda t: t.pop("layers.0.self_attn.o_proj.g_idx"))
    with pytest.raises(CheckpointError, match=r"missing tensor.*layers.0.self_attn.o_proj.g_idx"):
        load_gptq_checkpoint(tmp_path)


def test_checkpoint__g_idx_out_of_range_names_the_tensor(tmp_path):
    _ckpt(tmp_path)
    _corrupt(tmp_path, lambda t: t["layers.0.self_attn.q_proj.g_idx"].__setitem__(3, 4))
    with pytest.raises(
        CheckpointError, match=r"'layers.0.self_attn.q_proj.g_idx': values must lie in \[0, 4\)"
    ):
        load_gptq_checkpoint(tmp_path)


@pytest.mark.parametrize("config_file", ["quantize_config.json", "config.json"])
def test_checkpoint__bits_5_names_field_and_allowed(tmp_path, config_file):
    _ckpt(tmp_path, hf_config=config_file == "config.json")
    data = json.loads((tmp_path / config_file).read_text())
    (data.get("quantization_config", data))["bits"] = 5
    (tmp_path / config_file).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=rf"{config_file}.*bits=5.*allowed: \[2, 3, 4, 8\]"):
        load_gptq_checkpoint(tmp_path)


def test_checkpoint__pickle_files_are_not_loaded(tmp_path):
    (tmp_path / "quantize_config.json").write_text(json.dumps(CFG.to_dict()))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(CheckpointError, match="no \\*.safetensors.*pytorch_model.bin.*unpickling"):
        load_gptq_checkpoint(tmp_path)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("written, declared", [("gptq", "gptq_v2"), ("gptq_v2", "gptq")])
def test_checkpoint__sym_zero_format_mismatch_warns(tmp_path, bits, written, declared):
    w = torch.randn(32, 64)
    tensors = {
        f"p.{k}": v
        for k, v in quantize_gptq(
            w, QuantizationConfig(bits=bits, group_size=32, checkpoint_format=written)
        ).items()
    }
    save_gptq_checkpoint(
        tmp_path, tensors, QuantizationConfig(bits=bits, group_size=32, checkpoint_format=declared)
    )
    with pytest.warns(UserWarning, match=rf"'p.qzeros'.*probably '{written}'"):
        load_gptq_checkpoint(tmp_path)


def test_checkpoint__matching_zero_format_does_not_warn(tmp_path, recwarn):
    cfg = QuantizationConfig(bits=4, group_size=32, checkpoint_format="gptq_v2")
    save_gptq_checkpoint(
        tmp_path, {f"p.{k}": v for k, v in quantize_gptq(torch.randn(32, 64), cfg).items()}, cfg
    )
    load_gptq_checkpoint(tmp_path)
    assert not [w for w in recwarn if "qzeros" in str(w.message)]


@pytest.mark.parametrize(
    "cfg",
    [
        QuantizationConfig(bits=4, group_size=16, desc_act=True, sym=False),
        QuantizationConfig(bits=4, group_size=-1, desc_act=False, sym=True, checkpoint_format="gptq_v2"),
        QuantizationConfig(bits=3, group_size=32, desc_act=True, sym=True),
    ],
    ids=["4bit-g16-act-asym", "4bit-g-1-sym-v2", "3bit-g32-act-sym"],
)
def test_quantize_gptq__hessian_algorithm_beats_rtn_on_calibration_outputs(cfg):
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(64, 64, generator=gen)
    x = torch.randn(512, 64, generator=gen) @ mix * torch.linspace(0.1, 3, 64)  # correlated, uneven inputs
    w = torch.randn(32, 64, generator=gen)

    def output_error(t):
        dense = dequantize(
            t["qweight"],
            t["scales"],
            t["qzeros"],
            t["g_idx"],
            bits=cfg.bits,
            group_size=cfg.group_size,
            sym=cfg.sym,
            zero_format=cfg.zero_format,
        )
        return (x @ dense - x @ w.t()).pow(2).mean().item()

    gptq, rtn = quantize_gptq(w, cfg, inputs=x), quantize_gptq(w, cfg)
    assert {k: v.shape for k, v in gptq.items()} == {k: v.shape for k, v in rtn.items()}
    assert output_error(gptq) < 0.8 * output_error(rtn)
