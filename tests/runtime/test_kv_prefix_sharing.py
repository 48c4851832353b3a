"""PagedKVCacheManager prefix sharing: shared pages, copy-on-write, LRU eviction, and 10,000
random claim/prepare/commit/fork/release operations checked against a shadow dense cache."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from fusegraph import DeviceRef, DType
from fusegraph.runtime.kv_cache_manager import KVCacheFullError, PagedKVCacheManager

PAGE = 4


def _manager(num_blocks: int, *, prefix_caching: bool = True) -> PagedKVCacheManager:
    params = SimpleNamespace(
        dtype=DType.float32, n_kv_heads=1, head_dim=1, num_layers=1, page_size=PAGE, devices=[DeviceRef.CPU()]
    )
    return PagedKVCacheManager(params, num_blocks=num_blocks, prefix_caching=prefix_caching)


def _kv(prefix: list[int]) -> float:
    """What a model would cache at the last position of `prefix`: a function of the prefix only."""
    h = 0
    for t in prefix:
        h = (h * 31 + t + 7) % 100_003
    return float(h)


class Shadow:
    """Runs steps the way a model does (writes through the lookup table) and keeps a dense
    copy of every sequence's expected K/V, refusing any write into a shared page."""

    def __init__(self, m: PagedKVCacheManager) -> None:
        self.m = m
        self.tokens: dict[int, list[int]] = {}
        self.todo: dict[int, list[int]] = {}  # prompt tokens not fed yet

    def claim(self, prompt: list[int] | None = None) -> int:
        s = self.m.claim(prompt=prompt)
        self.tokens[s] = list(prompt[: self.m.length(s)]) if prompt else []
        self.todo[s] = list(prompt[self.m.length(s) :]) if prompt else []
        return s

    def next_tokens(self, s: int, n: int, rng: random.Random) -> list[int]:
        ids = self.todo[s][:n]
        return ids + [rng.randrange(50) for _ in range(n - len(ids))]

    def step(self, seqs: list[int], new: list[list[int]], commit: bool = True) -> None:
        batch = self.m.prepare(seqs, [len(t) for t in new], token_ids=new)
        lookup = batch.lookup_table.to(torch.int64)
        for row, (s, ids) in enumerate(zip(seqs, new)):
            start = int(batch.cache_lengths[row])
            assert start == len(self.tokens[s])
            prefix = list(self.tokens[s])
            for p, t in enumerate(ids, start):
                prefix.append(t)
                block = int(lookup[row, p // PAGE])
                assert self.m.pool.refs[block] == 1, f"write into block {block} shared by others"
                assert not self.m.pool.is_registered(block), f"write into cached page {block}"
                self.m.kv_blocks[block, 0, 0, p % PAGE] = _kv(prefix)
                self.m.kv_blocks[block, 1, 0, p % PAGE] = -_kv(prefix)
        if commit:
            self.m.commit(seqs, [len(t) for t in new])
            for s, ids in zip(seqs, new):
                self.tokens[s].extend(ids)
                del self.todo[s][: len(ids)]

    def check(self, s: int) -> None:
        toks = self.tokens[s]
        want = torch.tensor([_kv(toks[: i + 1]) for i in range(len(toks))]).reshape(-1, 1, 1)
        k, v = self.m.gather(s, layer_idx=0)
        assert torch.equal(k, want) and torch.equal(v, -want), f"sequence {s}"


def test_prefix__a_cached_prompt_prefix_skips_its_prefill_and_shares_the_pages() -> None:
    m = _manager(16)
    sh = Shadow(m)
    prompt = list(range(100, 110))  # 10 tokens: two full pages and a partial one
    a = sh.claim(prompt)
    sh.step([a], [prompt])
    b = sh.claim(prompt + [7, 8])  # the same prompt with a longer tail
    assert m.length(b) == 8 and m.pages(b) == m.pages(a)[:2] and m.prefix_hit_tokens == 8
    batch = m.prepare([b], [4], token_ids=[prompt[8:] + [7, 8]])
    assert batch.cache_lengths.tolist() == [8]  # the prefill of the shared prefix is skipped
    m.commit([b], [4])
    c = sh.claim(prompt[:8])  # the whole prompt is cached: its last token is still computed
    assert m.length(c) == 4
    for s in (a, c):
        sh.check(s)


def test_prefix__the_partial_last_page_is_copied_on_write_after_fork() -> None:
    m = _manager(16)
    sh = Shadow(m)
    a = sh.claim()
    sh.step([a], [[1, 2, 3, 4, 5, 6]])
    b = m.fork(a)
    sh.tokens[b], sh.todo[b] = list(sh.tokens[a]), []
    assert m.pages(b) == m.pages(a) and m.pool.refs[m.pages(a)[1]] == 2
    sh.step([a, b], [[9], [10, 11]])  # both write into the shared partial page: each copies it
    assert m.pages(a)[0] == m.pages(b)[0] and len({m.pages(a)[1], m.pages(b)[1]}) == 2
    sh.check(a)
    sh.check(b)


def test_prefix__released_pages_are_evicted_least_recently_released_first() -> None:
    m = _manager(4)
    sh = Shadow(m)
    first, second = [1] * 5, [2] * 5
    for prompt in (first, second):
        s = sh.claim(prompt)
        sh.step([s], [prompt[:4]])  # one full, cached page each
        m.release(s)
    assert m.free_blocks == 4 and m.pool.num_cached == 2
    hog = sh.claim()
    sh.step([hog], [[0] * 12])  # takes the 2 free pages, then evicts `first`'s page
    assert m.pool.evictions == 1
    assert m.length(m.claim(prompt=first)) == 0 and m.length(m.claim(prompt=second)) == 4


def test_prefix__sharing_off_keeps_every_sequence_private() -> None:
    m = _manager(8, prefix_caching=False)
    sh = Shadow(m)
    a = sh.claim([1] * 9)
    sh.step([a], [[1] * 9])
    assert m.length(m.claim(prompt=[1] * 9)) == 0


def test_prefix__10000_random_operations_leak_nothing_and_match_a_dense_shadow() -> None:
    rng = random.Random(0)
    m = _manager(24)
    sh = Shadow(m)
    bases = [[rng.randrange(50) for _ in range(rng.randrange(3, 14))] for _ in range(4)]
    counts = dict.fromkeys(("claim", "step", "abandon", "fork", "release", "full"), 0)
    for _ in range(10_000):
        live = list(sh.tokens)
        op = rng.choice(["claim", "step", "step", "step", "fork", "release"] if live else ["claim"])
        try:
            if op == "claim" and len(live) < 8:
                base = rng.choice(bases)
                sh.claim(base[: rng.randrange(1, len(base) + 1)] + [rng.randrange(50)] * rng.randrange(2))
            elif op == "step":
                seqs = rng.sample(live, rng.randrange(1, len(live) + 1))
                new = [sh.next_tokens(s, rng.randrange(0, 6), rng) for s in seqs]
                commit = rng.random() > 0.05
                op = op if commit else "abandon"
                sh.step(seqs, new, commit=commit)
            elif op == "fork":
                parent = rng.choice(live)
                child = m.fork(parent)
                sh.tokens[child], sh.todo[child] = list(sh.tokens[parent]), []
            elif op == "release" or len(live) >= 8:
                s = rng.choice(live)
                m.release(s)
                del sh.tokens[s], sh.todo[s]
        except KVCacheFullError:
            op = "full"
        counts[op] += 1
        in_use = sum(len(m.pages(s)) for s in m.sequences)
        assert sum(m.pool.refs) == in_use and m.free_blocks == m.num_blocks - sum(r > 0 for r in m.pool.refs)
        if sh.tokens and rng.random() < 0.2:
            sh.check(rng.choice(list(sh.tokens)))
    for s in list(sh.tokens):
        sh.check(s)
        m.release(s)
    assert m.free_blocks == m.num_blocks and not any(m.pool.refs)
    assert min(counts.values()) > 20, counts  # every kind of operation happened
    assert m.prefix_hit_tokens > 0 and m.pool.evictions > 0


def test_prefix__a_full_cache_changes_nothing() -> None:
    m = _manager(3)
    sh = Shadow(m)
    a = sh.claim()
    sh.step([a], [[1, 2, 3, 4, 5]])
    b = m.fork(a)
    sh.tokens[b], sh.todo[b] = list(sh.tokens[a]), []
    before = (m.pages(a), m.pages(b), m.free_blocks, list(m.pool.refs))
    with pytest.raises(KVCacheFullError, match="needs 3 more blocks but only 1 of 3 are free"):
        m.prepare([a, b], [4, 1])  # a: a copy of the shared page and a new page; b: a copy
    assert (m.pages(a), m.pages(b), m.free_blocks, list(m.pool.refs)) == before
