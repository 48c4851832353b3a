"""A tiny GPTQ act-order Llama directory written without transformers, and its TP steps.

Column-parallel projections get a random act order (shared by the projections of one
input, as GPTQ gives them); row-parallel ones (`o_proj`, `down_proj`) get an act order that
keeps each rank's K rows together, so a 2-way row split cuts no group (the cut case has its
own test).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from fusegraph.nn import QuantizationConfig, quantize_gptq

QUANT = QuantizationConfig(bits=4, group_size=16, desc_act=True, sym=False)
DIMS = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16)  # fmt: skip
# Per step, the tokens each of three sequences adds: a ragged prefill, then decode steps.
STEPS = [[5, 11, 1], [1, 1, 1], [2, 1, 3]]
NUM_BLOCKS = 16


def _blockwise_perm(k: int, world: int, gen: torch.Generator) -> torch.Tensor:
    per = k // world
    return torch.cat([torch.randperm(per, generator=gen) + r * per for r in range(world)])


def write_model(
    folder: Path,
    *,
    n_kv_heads: int = 2,
    tied: bool = False,
    cut_groups: bool = False,
    quant: QuantizationConfig = QUANT,
    seed: int = 0,
    **dims: int,
) -> Path:
    """Write `config.json`, `quantize_config.json` and `model.safetensors` into `folder`
    (`cut_groups`: random act orders for o_proj/down_proj too, so that a 2-way row split
    leaves groups on both ranks; `dims`: config sizes other than `DIMS`')."""
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    d = {**DIMS, **dims, "num_key_value_heads": n_kv_heads}
    h, inter, hd, heads = d["hidden_size"], d["intermediate_size"], d["head_dim"], d["num_attention_heads"]

    def rand(*shape: int, scale: float = 0.15) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale

    t: dict[str, torch.Tensor] = {"model.embed_tokens.weight": rand(d["vocab_size"], h)}
    t["model.norm.weight"] = 1 + rand(h, scale=0.3)
    if not tied:
        t["lm_head.weight"] = rand(d["vocab_size"], h)
    for i in range(d["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = 1 + rand(h, scale=0.3)
        t[p + "post_attention_layernorm.weight"] = 1 + rand(h, scale=0.3)
        attn_perm, mlp_perm = torch.randperm(h, generator=gen), torch.randperm(h, generator=gen)
        o_perm, down_perm = _blockwise_perm(heads * hd, 2, gen), _blockwise_perm(inter, 2, gen)
        if cut_groups:
            o_perm, down_perm = (
                torch.randperm(heads * hd, generator=gen),
                torch.randperm(inter, generator=gen),
            )
        linears = {
            "self_attn.q_proj": (rand(heads * hd, h), attn_perm),
            "self_attn.k_proj": (rand(n_kv_heads * hd, h), attn_perm),
            "self_attn.v_proj": (rand(n_kv_heads * hd, h), attn_perm),
            "self_attn.o_proj": (rand(h, heads * hd), o_perm),
            "mlp.gate_proj": (rand(inter, h), mlp_perm),
            "mlp.up_proj": (rand(inter, h), mlp_perm),
            "mlp.down_proj": (rand(h, inter), down_perm),
        }
        for name, (w, perm) in linears.items():
            packed = quantize_gptq(w, quant, perm=perm if quant.desc_act else None)
            t.update({f"{p}{name}.{k}": v for k, v in packed.items()})
    save_file({k: v.contiguous() for k, v in t.items()}, str(folder / "model.safetensors"))
    entry = {"bits": quant.bits, "group_size": quant.group_size, "desc_act": quant.desc_act, "sym": quant.sym,
             "quant_method": "gptq", "checkpoint_format": "gptq"}  # fmt: skip
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_act": "silu",
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64,
              "tie_word_embeddings": tied, "torch_dtype": "float32", **d,
              "quantization_config": entry}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "quantize_config.json").write_text(json.dumps(entry))
    return folder


def tokens(seed: int = 1) -> list[list[list[int]]]:
    """Token ids for `STEPS`."""
    g = torch.Generator().manual_seed(seed)
    return [
        [torch.randint(0, DIMS["vocab_size"], (n,), generator=g).tolist() for n in step] for step in STEPS
    ]


def run_model(
    model: Any, steps: list[list[list[int]]], new_tokens: int, device: str = "cpu"
) -> dict[str, Any]:
    """Run `steps` (ragged prefill, decode), then greedy-generate `new_tokens` per sequence;
    return every step's logits, the generated ids, each sequence's cache per layer and the
    graph that ran (the inputs on `device`, the model's)."""
    run, manager = model.compile(NUM_BLOCKS), model.kv_manager(NUM_BLOCKS)
    seqs = [manager.claim(max_len=64) for _ in steps[0]]

    def step(ids: list[list[int]]) -> torch.Tensor:
        lengths = [len(x) for x in ids]
        batch = manager.prepare(seqs, lengths)
        kv = [t.to(device) if isinstance(t, torch.Tensor) else t for t in batch.kv_inputs]
        tokens = torch.tensor([t for x in ids for t in x]).to(device)
        (logits,) = run(tokens, batch.row_offsets.to(device), *kv)
        manager.commit(seqs, lengths)
        return logits.clone()

    logits = [step(ids) for ids in steps]
    generated: list[list[int]] = [[] for _ in seqs]
    for _ in range(new_tokens):
        nxt = logits[-1].argmax(-1).tolist()
        for out, t in zip(generated, nxt, strict=True):
            out.append(t)
        logits.append(step([[t] for t in nxt]))
    caches = [[manager.gather(s, layer) for layer in range(DIMS["num_hidden_layers"])] for s in seqs]
    return {
        "logits": logits,
        "generated": generated,
        "caches": caches,
        "blocks_shape": list(manager.kv_blocks.shape),
        "graph": str(run.graph),
    }
