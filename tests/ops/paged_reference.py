"""Independent references for the ragged / paged-KV op tests, written from the math with
plain Python loops and dense torch, sharing no code with `fusegraph.ops`."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from xdsl.ir import Operation

from fusegraph import Graph

NO_BLOCK = 2**32 - 1


#: The torch-impl modes the op tests run (`LoweringContext.mode`).
Mode = Literal["custom", "decomposed"]


def u32(values: Sequence) -> torch.Tensor:
    """A uint32 tensor (the IR's metadata dtype)."""
    return torch.tensor(values, dtype=torch.int64).to(torch.uint32)


def rope_angles(pos: int, d: int, theta: float = 10000.0) -> list[float]:
    """θ_i · pos for i in 0..D/2-1, with θ_i = theta^(-2i/D)."""
    return [pos * theta ** (-2.0 * i / d) for i in range(d // 2)]


def freqs_table(max_pos: int, d: int, theta: float = 10000.0) -> torch.Tensor:
    """freqs_cis: row p = [cos θ0·p, sin θ0·p, cos θ1·p, sin θ1·p, ...]."""
    rows = []
    for p in range(max_pos):
        row = []
        for a in rope_angles(p, d, theta):
            row += [math.cos(a), math.sin(a)]
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float32)


def rope_reference(x: torch.Tensor, positions: Sequence[int], *, interleaved: bool, theta: float = 10000.0):
    """Rotate each row of `x [T, H, D]` by its own angles, pair by pair, in float64."""
    t_count, _, d = x.shape
    out = x.to(torch.float64).clone()
    src = x.to(torch.float64)
    for t in range(t_count):
        for i, a in enumerate(rope_angles(positions[t], d, theta)):
            j, k = (2 * i, 2 * i + 1) if interleaved else (i, i + d // 2)
            c, s = math.cos(a), math.sin(a)
            out[t, :, j] = src[t, :, j] * c - src[t, :, k] * s
            out[t, :, k] = src[t, :, j] * s + src[t, :, k] * c
    return out


@dataclass
class Step:
    """A ragged step: per-sequence cached lengths and new tokens, a paged layout."""

    cache_lengths: list[int]
    tokens: list[int]
    lookup: list[list[int]]
    page_size: int

    @property
    def row_offsets(self) -> list[int]:
        out = [0]
        for n in self.tokens:
            out.append(out[-1] + n)
        return out

    @property
    def total(self) -> int:
        return sum(self.tokens)

    def rows(self) -> list[tuple[int, int]]:
        """(sequence, position) of every row of the step."""
        return [(b, c + i) for b, (c, n) in enumerate(zip(self.cache_lengths, self.tokens)) for i in range(n)]

    def metadata(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return u32(self.row_offsets), u32(self.cache_lengths), u32(self.lookup)


def make_step(
    cache_lengths: list[int], tokens: list[int], page_size: int, num_blocks: int, seed: int = 0
) -> Step:
    """Shuffled (non-contiguous) pages per sequence, one spare page, padded with NO_BLOCK."""
    rng = random.Random(seed)
    blocks = list(range(num_blocks))
    rng.shuffle(blocks)
    need = [-(-(c + n) // page_size) + 1 for c, n in zip(cache_lengths, tokens)]
    assert sum(need) <= num_blocks, f"make_step: needs {sum(need)} blocks, has {num_blocks}"
    width = max(need) + 1
    lookup = []
    for n in need:
        pages, blocks = blocks[:n], blocks[n:]
        lookup.append(pages + [NO_BLOCK] * (width - n))
    return Step(cache_lengths, tokens, lookup, page_size)


def write_reference(kv: torch.Tensor, x: torch.Tensor, step: Step, layer: int, which: int) -> torch.Tensor:
    """The store, by hand: row t of sequence b at position p -> block lookup[b][p // P], slot p % P."""
    out = kv.clone()
    for t, (b, p) in enumerate(step.rows()):
        out[step.lookup[b][p // step.page_size], which, layer, p % step.page_size] = x[t]
    return out


def read_reference(kv: torch.Tensor, step: Step, b: int, length: int, layer: int, which: int) -> torch.Tensor:
    """Positions 0..length-1 of sequence b, `[length, Hkv, D]`."""
    p_size = step.page_size
    return torch.stack([kv[step.lookup[b][p // p_size], which, layer, p % p_size] for p in range(length)])


def dense_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offset: int, scale: float, window: int | None = None
) -> torch.Tensor:
    """Plain causal attention of `q [n, H, D]` (positions offset..offset+n-1) over
    `k, v [L, Hkv, D]`, in float64; GQA by repeating each kv head for its query group."""
    group = q.shape[1] // k.shape[1]
    k = k.to(torch.float64).repeat_interleave(group, dim=1)
    v = v.to(torch.float64).repeat_interleave(group, dim=1)
    out = torch.empty(q.shape, dtype=torch.float64)
    for i in range(q.shape[0]):
        pos = offset + i
        lo = 0 if window is None else max(0, pos - window + 1)
        s = torch.einsum("hd,lhd->hl", q[i].to(torch.float64), k[lo : pos + 1]) * scale
        out[i] = torch.einsum("hl,lhd->hd", torch.softmax(s, dim=-1), v[lo : pos + 1])
    return out


def only_op(graph: Graph, name: str) -> Operation:
    """The single op called `name` in the graph."""
    found = [op for op in graph.block.ops if op.name == name]
    assert len(found) == 1, f"expected one {name}, found {len(found)}"
    return found[0]
