"""Tiny random transformers models, saved as the GPTQ (or dense) directories GPTQModel writes.

`make_model_dir(family, folder, quant=...)` builds `<Family>ForCausalLM(config)` with random
weights (norms and biases perturbed so that every parameter matters), quantizes every decoder
linear with `quantize_gptq` (AutoGPTQ layout: `qweight/qzeros/scales/g_idx`), and writes the
directory: `config.json` with GPTQModel's `quantization_config` entry, `quantize_config.json`,
`model.safetensors`. The returned transformers model holds the *dequantized* weights: it is the
reference the tests compare with. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from fusegraph.nn import QuantizationConfig, quantize_gptq
from fusegraph.ops.gptq_packing import dequantize

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")  # fmt: skip
_SHARED_INPUT = {"self_attn.q_proj": "attn_in", "self_attn.k_proj": "attn_in", "self_attn.v_proj": "attn_in",
                 "mlp.gate_proj": "mlp_in", "mlp.up_proj": "mlp_in"}  # fmt: skip
SMALL = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.08,
             bos_token_id=None, eos_token_id=None, pad_token_id=None)  # fmt: skip


def hf_config(family: str, **overrides: Any) -> Any:
    """A transformers config of `family` ("llama", "qwen2", "qwen3", "mistral"), tiny dims."""
    import transformers

    cls = {"llama": "LlamaConfig", "qwen2": "Qwen2Config", "qwen3": "Qwen3Config", "mistral": "MistralConfig"}
    kw = {**SMALL, **({"head_dim": 16} if family in ("qwen3", "mistral") else {}), **overrides}
    return getattr(transformers, cls[family])(**kw)


def make_model_dir(
    family: str,
    folder: Path,
    *,
    quant: QuantizationConfig | None,
    shared_perm: bool = True,
    seed: int = 0,
    **config_overrides: Any,
) -> Any:
    """Write a model directory; return the transformers reference (dequantized weights, eval, f32).

    Args:
        family: "llama", "qwen2", "qwen3" or "mistral".
        folder: Where to write.
        quant: GPTQ settings, or None for a dense checkpoint.
        shared_perm: With act order: the projections of one input (q/k/v, gate/up) share their
            permutation, as GPTQ gives them (they see the same Hessian); else each has its own.
        seed: The random seed.
        **config_overrides: Config fields (tie_word_embeddings, sliding_window, rope_parameters, ...).
    """
    import transformers

    torch.manual_seed(seed)
    config = hf_config(family, **config_overrides)
    cls = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
           "mistral": "MistralForCausalLM"}[family]  # fmt: skip
    model = getattr(transformers, cls)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    model.save_pretrained(folder)  # config.json (+ generation_config.json) and dense weights
    if quant is None:
        return model
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    for i in range(config.num_hidden_layers):
        perms: dict[str, torch.Tensor] = {}
        for linear in LINEARS:
            name = f"model.layers.{i}.{linear}"
            weight = tensors.pop(f"{name}.weight")
            perm = None
            if quant.desc_act:
                key = _SHARED_INPUT.get(linear, linear) if shared_perm else linear
                perm = perms.setdefault(key, torch.randperm(weight.shape[1]))
            packed = quantize_gptq(weight, quant, perm=perm)
            tensors.update({f"{name}.{k}": v for k, v in packed.items()})
            _set_dequantized(model, name, packed, quant)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    write_gptq_config(folder, quant)
    return model


def write_gptq_config(folder: Path, quant: QuantizationConfig) -> None:
    """GPTQModel's form: `quantization_config` in config.json and a `quantize_config.json`."""
    entry = {
        "bits": quant.bits,
        "group_size": quant.group_size,
        "desc_act": quant.desc_act,
        "sym": quant.sym,
        "lm_head": False,
        "quant_method": "gptq",
        "checkpoint_format": quant.checkpoint_format,
        "pack_dtype": "int32",
        "damp_percent": 0.01,
        "true_sequential": True,
        "meta": {"quantizer": ["fusegraph:tests"]},
    }
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = entry
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "quantize_config.json").write_text(json.dumps(entry, indent=2))


def _set_dequantized(
    model: Any, name: str, packed: dict[str, torch.Tensor], quant: QuantizationConfig
) -> None:
    w = dequantize(
        packed["qweight"],
        packed["scales"],
        packed["qzeros"],
        packed["g_idx"] if quant.desc_act else None,
        bits=quant.bits,
        group_size=quant.group_size,
        sym=quant.sym,
        zero_format=quant.zero_format,
    )
    with torch.no_grad():
        model.get_submodule(name).weight.copy_(w.t())


@torch.no_grad()
def hf_last_logits(model: Any, sequences: list[list[int]]) -> torch.Tensor:
    """transformers' logits of each sequence's last token, `[len(sequences), vocab]` (one forward each)."""
    rows = [model(torch.tensor([seq])).logits[0, -1] for seq in sequences]
    return torch.stack(rows).float()
