"""An independent dense reference of attention with rope and an explicit per-sequence cache,
written from the math (no fusegraph code), plus GPTQ dequantization from the format's definition."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


def dequantize_gptq(qweight, qzeros, scales, g_idx, *, bits, zero_format):
    """W [N, K] (HF layout) = ((q[k, n] - z[g_idx[k], n]) * s[g_idx[k], n])ᵀ, for 2/4/8 bits."""
    per = 32 // bits
    mask = (1 << bits) - 1
    shifts = torch.arange(per) * bits

    def unpack(words, dim):  # value i of a word sits at bits [i*bits, (i+1)*bits)
        w = words.to(torch.int64) & 0xFFFFFFFF
        vals = (w.unsqueeze(-1) >> shifts) & mask  # [..., per]
        if dim == 0:
            return vals.permute(0, 2, 1).reshape(-1, words.shape[1])
        return vals.reshape(words.shape[0], -1)

    q = unpack(qweight, 0)  # [K, N]
    z = unpack(qzeros, 1) + (1 if zero_format == "v1" else 0)  # [G, N]
    g = g_idx.to(torch.int64)
    return ((q - z[g]).double() * scales.double()[g]).t()


def rope_reference(x, positions, head_dim, theta, interleaved):
    """Rotate x [n, heads, D] at `positions` [n]: θi = theta^(-2i/D)."""
    half = head_dim // 2
    inv = torch.tensor([theta ** (-2 * i / head_dim) for i in range(half)], dtype=torch.float64)
    ang = positions.double()[:, None] * inv[None]  # [n, D/2]
    cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
        out = torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1)
        return out.reshape(x.shape)
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


@dataclass
class ReferenceAttention:
    """Dense attention; weights in HF layout [out, in], float64."""

    wq: torch.Tensor
    wk: torch.Tensor
    wv: torch.Tensor
    wo: torch.Tensor
    n_heads: int
    n_kv_heads: int
    head_dim: int
    theta: float
    interleaved: bool
    biases: tuple | None = None
    qk_norm: tuple | None = None  # (q_w, k_w, eps)
    clip: float | None = None
    cache: dict = field(default_factory=dict)  # seq -> (K [len, Hkv, D], V)

    def _project(self, x, w, b):
        if self.clip is not None:
            w = w.clamp(-self.clip, self.clip)
        y = x @ w.t()
        return y if b is None else y + b

    def _norm(self, t, w, eps):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + eps) * w

    def step(self, seq, x):
        """Attend the new tokens x [n, hidden] of sequence `seq`; returns [n, hidden]."""
        n, d = x.shape[0], self.head_dim
        bq, bk, bv = self.biases if self.biases is not None else (None, None, None)
        q = self._project(x, self.wq, bq).reshape(n, self.n_heads, d)
        k = self._project(x, self.wk, bk).reshape(n, self.n_kv_heads, d)
        v = self._project(x, self.wv, bv).reshape(n, self.n_kv_heads, d)
        if self.qk_norm is not None:
            qw, kw, eps = self.qk_norm
            q, k = self._norm(q, qw, eps), self._norm(k, kw, eps)
        start = self.cache[seq][0].shape[0] if seq in self.cache else 0
        pos = torch.arange(start, start + n)
        q = rope_reference(q, pos, d, self.theta, self.interleaved)
        k = rope_reference(k, pos, d, self.theta, self.interleaved)
        if seq in self.cache:
            k = torch.cat([self.cache[seq][0], k])
            v = torch.cat([self.cache[seq][1], v])
        self.cache[seq] = (k, v)
        out = torch.empty(n, self.n_heads, d, dtype=torch.float64)
        group = self.n_heads // self.n_kv_heads
        for h in range(self.n_heads):
            scores = q[:, h] @ k[:, h // group].t() / math.sqrt(d)  # [n, len]
            visible = torch.arange(k.shape[0])[None, :] <= pos[:, None]
            probs = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
            out[:, h] = probs @ v[:, h // group]
        return out.reshape(n, -1) @ self.wo.t()
