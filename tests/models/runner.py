"""Drive a loaded `DecoderModel` over ragged steps with a `PagedKVCacheManager`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

NUM_BLOCKS = 24

# Per step, the tokens each of three sequences adds: a ragged prefill, decode steps, and a step
# where sequences add different numbers of tokens.
STEPS = [[5, 11, 1], [1, 1, 1], [2, 1, 3], [1, 1, 1]]


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one CPU thread inside the block: on a shared 2-core box, tiny matmuls run far faster on one thread
    than on two contending (~20-40x in the model tests)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_steps(run: Any, manager: Any, new_tokens: Sequence[Sequence[Sequence[int]]]) -> list[torch.Tensor]:
    """Feed `new_tokens[step][seq]` (lists of ids) step by step; return each step's logits."""
    seqs = [manager.claim(max_len=64) for _ in new_tokens[0]]
    out = []
    for step in new_tokens:
        lengths = [len(t) for t in step]
        batch = manager.prepare(seqs, lengths)
        tokens = torch.tensor([t for seq in step for t in seq], dtype=torch.int64)
        (logits,) = run(tokens, batch.row_offsets, *batch.kv_inputs)
        manager.commit(seqs, lengths)
        out.append(logits)
    return out


def random_steps(vocab: int, seed: int = 1) -> list[list[list[int]]]:
    """Token ids for `STEPS`."""
    g = torch.Generator().manual_seed(seed)
    return [[torch.randint(0, vocab, (n,), generator=g).tolist() for n in step] for step in STEPS]


def greedy(run: Any, manager: Any, prompts: Sequence[Sequence[int]], new: int) -> list[list[int]]:
    """Greedy continuation of each prompt by `new` tokens, all prompts in one ragged batch."""
    seqs = [manager.claim(max_len=64) for _ in prompts]
    step: list[list[int]] = [list(p) for p in prompts]
    generated: list[list[int]] = [[] for _ in prompts]
    for _ in range(new):
        lengths = [len(t) for t in step]
        batch = manager.prepare(seqs, lengths)
        tokens = torch.tensor([t for seq in step for t in seq], dtype=torch.int64)
        (logits,) = run(tokens, batch.row_offsets, *batch.kv_inputs)
        manager.commit(seqs, lengths)
        step = [[int(t)] for t in logits.argmax(-1)]
        for out, (t,) in zip(generated, step):
            out.append(t)
    return generated
