"""Run a tiny transformers attention module step by step, as HF generation does, and run the
same steps through our layer over a paged cache; compare every step and the whole cache.

The HF side is transformers' own code only: the model family's `*Attention` and
`*RotaryEmbedding` modules, `DynamicCache`, and `masking_utils`' causal / sliding-window
masks, one sequence at a time (batch 1, a fresh rotary module per sequence, so dynamic and
longrope scaling see that sequence's own length). Our side runs the sequences as one ragged
batch per step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

import fusegraph
from fusegraph import DeviceRef, DType, Graph, TensorType
from fusegraph.nn import KVCacheParams, PagedCacheValues
from fusegraph.runtime import PagedKVCacheManager

if TYPE_CHECKING:
    from transformers.cache_utils import CacheLayerMixin

CPU = DeviceRef.CPU()


class HFSequence:
    """One sequence through HF: `step(x [n, hidden])` returns `[n, hidden]` (float64)."""

    def __init__(self, config, attn, rotary_cls):
        self.config, self.attn = config, attn
        self.rotary = rotary_cls(config).double()
        self.cache = DynamicCache(config=config)
        self.length = 0

    def step(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 0:  # this sequence sits the step out
            return x.double()
        x = x.double()[None]
        pos = torch.arange(self.length, self.length + x.shape[1])[None]
        make = create_causal_mask if getattr(self.config, "sliding_window", None) is None else None
        make = make or create_sliding_window_causal_mask
        mask = make(
            config=self.config, inputs_embeds=x, attention_mask=None, cache=self.cache, position_ids=pos
        )
        cos, sin = self.rotary(x, pos)
        out, _ = self.attn(x, (cos, sin), mask, cache=self.cache)
        self.length += x.shape[1]
        return out[0]

    def cached_kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """HF's cached K, V of layer 0 as `[len, Hkv, D]` each."""
        layer = cast("CacheLayerMixin", self.cache.layers[0])  # a key/value layer, filled
        keys, values = cast(torch.Tensor, layer.keys), cast(torch.Tensor, layer.values)
        return keys[0].transpose(0, 1), values[0].transpose(0, 1)


def hf_state(attn) -> dict[str, torch.Tensor]:
    """The HF module's projection weights (and biases), float32, under our layer's names."""
    return {k: v.detach().float() for k, v in attn.state_dict().items() if "rotary" not in k}


def run_against_hf(layer, rope, kv_params, config, attn_hf, rotary_cls, steps, *, backend="eager", tol=2e-5):
    """Run `steps` (a list of per-sequence token counts, prefill chunks and decode steps) through
    `layer` (loaded with the HF module's weights) and through HF; compare outputs and caches.

    Returns the compiled model (for callers that inspect it)."""
    hidden = config.hidden_size
    n_seqs = len(steps[0])
    total = [sum(s[i] for s in steps) for i in range(n_seqs)]
    manager = PagedKVCacheManager(kv_params, num_blocks=n_seqs * -(-max(total) // kv_params.page_size) + 1)
    with Graph(
        "hf_attn",
        input_types=[
            TensorType(kv_params.dtype, ["total_seq_len", hidden], CPU),
            TensorType(DType.uint32, ["batch_plus_1"], CPU),
            *manager.input_types(),
        ],
    ) as g:
        x, row_offsets, *kv_inputs = g.inputs
        g.output(layer(0, x, PagedCacheValues(*kv_inputs), rope.freqs_cis, row_offsets))
    model = fusegraph.compile(g, backend=backend, device="cpu", weights=layer.state_dict())
    refs = [HFSequence(config, attn_hf, rotary_cls) for _ in range(n_seqs)]
    seqs = [manager.claim(max_len=max(total)) for _ in range(n_seqs)]
    gen = torch.Generator().manual_seed(11)

    def close(got, want, what):
        atol = tol * max(1.0, want.abs().max().item())
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=atol, msg=lambda m: f"{what}: {m}")

    with torch.no_grad():
        for n, tokens in enumerate(steps):
            batch = manager.prepare(seqs, tokens)
            xs = torch.randn(sum(tokens), hidden, generator=gen)
            (y,) = model(xs, batch.row_offsets, *batch.kv_inputs)
            manager.commit(seqs, tokens)
            want = torch.cat([r.step(c) for r, c in zip(refs, xs.split(tokens), strict=True)])
            close(y, want, f"step {n} {tokens}")
        for i, (seq, ref) in enumerate(zip(seqs, refs, strict=True)):
            k, v = manager.gather(seq, layer_idx=0)
            hk, hv = ref.cached_kv()
            close(k[-hk.shape[0] :], hk, f"K of seq {i}")  # a sliding HF cache keeps only the tail
            close(v[-hv.shape[0] :], hv, f"V of seq {i}")
    return model


def kv_params_for(config, page_size: int, head_dim: int) -> KVCacheParams:
    return KVCacheParams(
        dtype=DType.float32,
        n_kv_heads=config.num_key_value_heads,
        head_dim=head_dim,
        num_layers=1,
        page_size=page_size,
        devices=[CPU],
    )
