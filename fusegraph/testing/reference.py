"""A dense multi-head attention with an explicit per-sequence cache, in plain torch.

It shares no code with fusegraph's ops: rope comes from the rotation formula, attention is
a dense masked softmax over each sequence's whole K/V history, and weights are dense
(dequantize GPTQ weights before passing them in). The demo and the tests compare every
backend against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


def rope_reference(x: torch.Tensor, positions: torch.Tensor, theta: float, interleaved: bool) -> torch.Tensor:
    """Rotate `x [n, heads, D]` at `positions [n]`: pair i turns by angle p·theta^(-2i/D).

    interleaved=True pairs dims (2i, 2i+1) (GPT-J); False pairs (i, i + D/2) (NeoX, HF Llama).
    """
    d = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, d // 2, dtype=torch.float64) * 2 / d)
    angle = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    cos, sin = angle.cos()[:, None, :], angle.sin()[:, None, :]
    xd = x.to(torch.float64)
    if interleaved:
        a, b = xd[..., 0::2], xd[..., 1::2]
        out = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)
    else:
        a, b = xd[..., : d // 2], xd[..., d // 2 :]
        out = torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)
    return out.to(x.dtype)


@dataclass
class DenseAttentionReference:
    """Llama-style attention over ragged batches, one explicit K/V list per sequence.

    Weights are dense `[out, in]` (HF layout). Call `step(xs)` with one `[n_b, hidden]`
    tensor per sequence; it returns the outputs concatenated in sequence order.
    """

    wq: torch.Tensor
    wk: torch.Tensor
    wv: torch.Tensor
    wo: torch.Tensor
    n_heads: int
    n_kv_heads: int
    head_dim: int
    theta: float = 10000.0
    interleaved: bool = False
    scale: float | None = None
    keys: dict[int, torch.Tensor] = field(default_factory=dict)
    values: dict[int, torch.Tensor] = field(default_factory=dict)

    def step(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """Run one ragged step: sequence b gets the rows `xs[b]`; returns `[sum n_b, hidden]`."""
        return torch.cat([self._sequence(b, x) for b, x in enumerate(xs)], dim=0)

    def _sequence(self, b: int, x: torch.Tensor) -> torch.Tensor:
        n, d = x.shape[0], self.head_dim
        past = self.keys[b].shape[0] if b in self.keys else 0
        pos = torch.arange(past, past + n)
        q = rope_reference((x @ self.wq.T).reshape(n, self.n_heads, d), pos, self.theta, self.interleaved)
        k = rope_reference((x @ self.wk.T).reshape(n, self.n_kv_heads, d), pos, self.theta, self.interleaved)
        v = (x @ self.wv.T).reshape(n, self.n_kv_heads, d)
        self.keys[b] = torch.cat([self.keys[b], k]) if b in self.keys else k
        self.values[b] = torch.cat([self.values[b], v]) if b in self.values else v
        return self._attend(q, self.keys[b], self.values[b], pos) @ self.wo.T

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        group = self.n_heads // self.n_kv_heads
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        scale = self.scale if self.scale is not None else 1.0 / math.sqrt(self.head_dim)
        scores = torch.einsum("qhd,khd->hqk", q.double(), k.double()) * scale
        visible = torch.arange(k.shape[0])[None, :] <= pos[:, None]
        scores = scores.masked_fill(~visible[None], float("-inf"))
        out = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v.double())
        return out.reshape(q.shape[0], -1).to(q.dtype)
