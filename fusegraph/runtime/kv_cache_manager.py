"""`PagedKVCacheManager`: the host side of the paged KV cache.

It owns `kv_blocks [num_blocks, 2, num_layers, page_size, n_kv_heads, head_dim]`
(allocated with zeros, so a never-written slot reads as 0 rather than as garbage), hands
out blocks to sequences as their tokens arrive, and builds each step's metadata:
`row_offsets`, `cache_lengths` and `lookup_table` (uint32).

- `claim` reserves nothing. `prepare` allocates the pages the step's new tokens land in;
  when the cache cannot supply them it raises `KVCacheFullError` (blocks needed and free)
  and changes nothing. `commit` advances the lengths of exactly what was prepared.
- Prefix sharing: a full page whose tokens are known (`prepare(..., token_ids=...)`) is
  registered under the chained hash of its token prefix. `claim(prompt=...)` attaches the
  cached pages that start the prompt, so `length(seq)` (the step's `cache_lengths`) already
  counts them and their prefill is skipped. Shared pages are reference counted and never
  written; a shared partial last page (after `fork`) is copied on write. Released pages
  stay findable until they are evicted, least recently released first.

Example:
    >>> manager = PagedKVCacheManager(kv_params, num_blocks=64)
    >>> seqs = [manager.claim() for _ in range(3)]
    >>> batch = manager.prepare(seqs, [5, 17, 1])
    >>> (y,) = model(x, batch.row_offsets, *batch.kv_inputs)
    >>> manager.commit(seqs, [5, 17, 1])
    >>> k, v = manager.gather(seqs[0], layer_idx=0)
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from fusegraph.compiler.devices import DeviceRef
from fusegraph.compiler.dtypes import DType
from fusegraph.compiler.types import BufferType, TensorType
from fusegraph.ops._ragged import NO_BLOCK
from fusegraph.runtime.kv_block_pool import BlockPool, KVCacheFullError, chain_hash

__all__ = ["Batch", "KVCacheFullError", "PagedKVCacheManager"]

_PARAMS = ("dtype", "n_kv_heads", "head_dim", "num_layers", "page_size")


@dataclass(frozen=True)
class Batch:
    """One step's inputs for a model with paged attention.

    Attributes:
        row_offsets: uint32 `[B+1]`, the ragged row offsets of the step's tokens.
        cache_lengths: uint32 `[B]`, tokens cached per sequence before the step.
        lookup_table: uint32 `[B, max_pages]`, block id of each page (`NO_BLOCK` if unused).
        kv_blocks: the manager's cache tensor (written in place by the model).
    """

    row_offsets: torch.Tensor
    cache_lengths: torch.Tensor
    lookup_table: torch.Tensor
    kv_blocks: torch.Tensor

    @property
    def kv_inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(kv_blocks, cache_lengths, lookup_table)`, in `input_types()` order."""
        return self.kv_blocks, self.cache_lengths, self.lookup_table


@dataclass
class _Sequence:
    pages: list[int]
    max_len: int | None
    length: int = 0
    tokens: list[int] | None = field(default_factory=list)  # None once a step came without ids
    keys: list[bytes] = field(default_factory=list)  # chained hash of each full page
    pending: tuple[int, list[int] | None] | None = None  # the prepared, uncommitted step


def _is_count(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool)


class PagedKVCacheManager:
    """Allocates the paged KV cache and tracks which blocks each sequence uses.

    Args:
        params: a `KVCacheParams` (or any object with `dtype` (a fusegraph DType),
            `n_kv_heads`, `head_dim`, `num_layers`, `page_size` and optionally `devices`).
        num_blocks: the number of pages of `page_size` tokens in the cache.
        devices: overrides `params.devices`; the cache lives on the first one (default CPU).
        prefix_caching: share full pages with equal token prefixes (needs token ids).
    """

    def __init__(
        self,
        params: Any,
        num_blocks: int,
        devices: Sequence[DeviceRef] | None = None,
        *,
        prefix_caching: bool = True,
    ) -> None:
        if missing := [name for name in _PARAMS if not hasattr(params, name)]:
            raise ValueError(f"PagedKVCacheManager: params lacks {missing}; needs {list(_PARAMS)}")
        if not isinstance(params.dtype, DType):
            raise ValueError(
                f"PagedKVCacheManager: params.dtype must be a fusegraph DType, got {params.dtype!r}"
            )
        for name in _PARAMS[1:]:
            if int(getattr(params, name)) < 1:
                raise ValueError(
                    f"PagedKVCacheManager: params.{name} must be >= 1, got {getattr(params, name)}"
                )
        if not _is_count(num_blocks) or num_blocks < 1:
            raise ValueError(f"PagedKVCacheManager: num_blocks must be an int >= 1, got {num_blocks=}")
        devices = devices or getattr(params, "devices", None) or [DeviceRef.CPU()]
        self.params = params
        self.num_blocks = num_blocks
        self.device = devices[0]
        self.page_size = int(params.page_size)
        self.prefix_caching = prefix_caching
        shape = (num_blocks, 2, params.num_layers, self.page_size, params.n_kv_heads, params.head_dim)
        self.kv_blocks = torch.zeros(shape, dtype=params.dtype.to_torch(), device=self.device.to_torch())
        self.pool = BlockPool(num_blocks)
        self.prefix_hit_tokens = 0  # prompt tokens whose prefill a cached prefix skipped
        # One private page per padding row (held for good): two rows writing one block is
        # what the runtime refuses as a write into another sequence's cache.
        self._scratch: list[int] = []
        self._seqs: dict[int, _Sequence] = {}
        self._next_id = 0

    # --- sequences --------------------------------------------------------------------
    @property
    def free_blocks(self) -> int:
        """Blocks an allocation can take (free ones and evictable cached prefix pages)."""
        return self.pool.num_free

    def claim(self, max_len: int | None = None, *, prompt: Sequence[int] | None = None) -> int:
        """Start a sequence; returns its id. Reserves no block.

        Args:
            max_len: optional bound on the sequence's length (`prepare` refuses to pass it).
            prompt: the prompt's token ids. With prefix caching, the cached full pages that
                start it are attached (at most `len(prompt) - 1` tokens, so the last token is
                still computed) and `length(seq)` counts them: feed `prompt[length(seq):]`.

        Raises:
            ValueError: `max_len` is not an int >= 1.
        """
        if max_len is not None and (not _is_count(max_len) or max_len < 1):
            raise ValueError(f"claim: max_len must be an int >= 1 (or None), got {max_len=}")
        seq = _Sequence(pages=[], max_len=max_len)
        if prompt is not None and self.prefix_caching:
            self._attach_prefix(seq, [int(t) for t in prompt])
        seq_id, self._next_id = self._next_id, self._next_id + 1
        self._seqs[seq_id] = seq
        return seq_id

    def _attach_prefix(self, seq: _Sequence, prompt: list[int]) -> None:
        usable = len(prompt) - 1
        if seq.max_len is not None:
            usable = min(usable, seq.max_len)
        key = None
        for start in range(0, usable - self.page_size + 1, self.page_size):
            tokens = prompt[start : start + self.page_size]
            key = chain_hash(key, tokens)
            if (block := self.pool.lookup(key)) is None:
                break
            self.pool.retain(block)
            seq.pages.append(block)
            seq.keys.append(key)
            assert seq.tokens is not None
            seq.tokens.extend(tokens)
            seq.length += self.page_size
        self.prefix_hit_tokens += seq.length

    def fork(self, seq_id: int) -> int:
        """A new sequence sharing all of `seq_id`'s cached tokens (copy-on-write pages)."""
        parent = self._get("fork", seq_id)
        pages = parent.pages[: -(-parent.length // self.page_size)]
        for block in pages:
            self.pool.retain(block)
        child = _Sequence(
            pages=list(pages),
            max_len=parent.max_len,
            length=parent.length,
            tokens=None if parent.tokens is None else list(parent.tokens),
            keys=list(parent.keys),
        )
        child_id, self._next_id = self._next_id, self._next_id + 1
        self._seqs[child_id] = child
        return child_id

    def release(self, seq_id: int) -> None:
        """Drop a sequence; its pages are freed once no other sequence uses them (full pages
        with known tokens stay cached for later prompts until evicted)."""
        seq = self._get("release", seq_id)
        for block in reversed(seq.pages):  # the tail first, so a prefix outlives its tail
            self.pool.release(block)
        del self._seqs[seq_id]

    def length(self, seq_id: int) -> int:
        """Tokens cached for the sequence."""
        return self._get("length", seq_id).length

    def pages(self, seq_id: int) -> list[int]:
        """The block ids of the sequence's pages, in order (a copy)."""
        return list(self._get("pages", seq_id).pages)

    @property
    def sequences(self) -> list[int]:
        """The ids of the claimed sequences."""
        return list(self._seqs)

    def _get(self, what: str, seq_id: int) -> _Sequence:
        if (seq := self._seqs.get(seq_id)) is None:
            raise ValueError(f"{what}: unknown sequence {seq_id}; claimed: {sorted(self._seqs)}")
        return seq

    # --- steps ------------------------------------------------------------------------
    def _check_step(self, what: str, seqs: Sequence[int], tokens: Sequence[Any]) -> list[_Sequence]:
        if len(seqs) != len(tokens):
            raise ValueError(f"{what}: {len(seqs)} sequences but {len(tokens)} token counts")
        if not seqs:
            raise ValueError(f"{what}: needs at least one sequence")
        if len(set(seqs)) != len(seqs):
            raise ValueError(f"{what}: a sequence appears twice in {list(seqs)}")
        known = self._seqs
        found = [known[s] if s in known else self._get(what, s) for s in seqs]
        for seq_id, seq, n in zip(seqs, found, tokens, strict=True):
            if not _is_count(n) or n < 0:
                raise ValueError(f"{what}: sequence {seq_id}: token count must be an int >= 0, got {n!r}")
            if seq.max_len is not None and seq.length + n > seq.max_len:
                raise ValueError(
                    f"{what}: sequence {seq_id} holds {seq.length} tokens; {n} more would reach "
                    f"position {seq.length + n - 1}, past its max_len={seq.max_len}"
                )
        return found

    def prepare(
        self,
        seqs: Sequence[int],
        tokens: Sequence[int],
        *,
        token_ids: Sequence[Sequence[int]] | None = None,
        pad_to: int | None = None,
        lookup_width: int | None = None,
    ) -> Batch:
        """Allocate the pages for a step in which `seqs[i]` adds `tokens[i]` tokens, and
        return the step's metadata. The model then writes the new K/V; `commit` follows.

        Args:
            seqs: the sequences of the step, in row order.
            tokens: how many new tokens each adds.
            token_ids: the new tokens' ids per sequence; needed for prefix sharing.
            pad_to: add padding rows (one token each, each writing its own scratch page) up to
                this batch size, for replaying a CUDA graph captured at that size.
            lookup_width: the lookup table's minimum width (a fixed shape for CUDA graphs).

        Raises:
            KVCacheFullError: too few free blocks; nothing was changed.
            ValueError: bad arguments, or a sequence would pass its `max_len`.
        """
        found = self._check_step("prepare", seqs, tokens)
        ids = self._check_ids(seqs, tokens, token_ids)
        page, refs = self.page_size, self.pool.refs
        need = [(s.length + n + page - 1) // page for s, n in zip(found, tokens)]
        new_pages = sum(k - len(s.pages) for s, k in zip(found, need) if k > len(s.pages))
        # a write into a partial last page another sequence shares copies that page first
        copy = [
            s for s, n in zip(found, tokens) if n and s.length % page and refs[s.pages[s.length // page]] > 1
        ]
        scratch = max(0, (pad_to or 0) - len(seqs) - len(self._scratch))
        if (needed := new_pages + len(copy) + scratch) > self.pool.num_free:
            raise KVCacheFullError(needed, self.pool.num_free, self.num_blocks)
        for seq in copy:
            self._copy_on_write(seq)
        for seq, k in zip(found, need):
            while len(seq.pages) < k:
                seq.pages.append(self.pool.allocate())
        for seq, n, i in zip(found, tokens, ids):
            seq.pending = (n, i)
        return self._batch(found, list(tokens), need, pad_to, lookup_width)

    def _check_ids(
        self, seqs: Sequence[int], tokens: Sequence[int], token_ids: Sequence[Sequence[int]] | None
    ) -> list[list[int] | None]:
        if token_ids is None:
            return [None] * len(seqs)
        if len(token_ids) != len(seqs):
            raise ValueError(f"prepare: {len(seqs)} sequences but {len(token_ids)} token_ids lists")
        for seq_id, n, row in zip(seqs, tokens, token_ids):
            if len(row) != n:
                raise ValueError(f"prepare: sequence {seq_id}: {n} tokens but {len(row)} token ids")
        return [[int(t) for t in row] for row in token_ids]

    def _copy_on_write(self, seq: _Sequence) -> None:
        index = seq.length // self.page_size
        old, new = seq.pages[index], self.pool.allocate()
        self.kv_blocks[new].copy_(self.kv_blocks[old])
        self.pool.release(old)
        seq.pages[index] = new

    def _batch(
        self,
        found: list[_Sequence],
        tokens: list[int],
        need: list[int],
        pad_to: int | None,
        lookup_width: int | None,
    ) -> Batch:
        lengths = [s.length for s in found]
        width = max(1, lookup_width or 0, *need)
        lookup: list[int] = []
        for s, k in zip(found, need):
            lookup += s.pages[:k]
            lookup += [NO_BLOCK] * (width - k)
        if pad_to is not None and pad_to > len(found):
            pad = pad_to - len(found)
            while len(self._scratch) < pad:
                self._scratch.append(self.pool.allocate())
            tokens = tokens + [1] * pad
            lengths = lengths + [0] * pad
            for page in self._scratch[:pad]:
                lookup += [page] + [NO_BLOCK] * (width - 1)
        # One host array, one transfer: offsets, lengths (each padded to 64 bytes, the alignment
        # IREE's CPU driver needs to import a buffer rather than copy it), the table.
        rows = len(lengths)
        a, b = -(-(rows + 1) // 16) * 16, -(-rows // 16) * 16
        offsets = [0, *itertools.accumulate(tokens), *[0] * (a - rows - 1)]
        host = array("I", offsets + lengths + [0] * (b - rows) + lookup)
        meta = torch.frombuffer(host, dtype=torch.uint32)
        # A CPU cache shares the array's memory otherwise: clone into torch's 64-byte-aligned storage.
        meta = meta.clone() if self.kv_blocks.device.type == "cpu" else meta.to(self.kv_blocks.device)
        return Batch(
            row_offsets=meta[: rows + 1],
            cache_lengths=meta[a : a + rows],
            lookup_table=meta[a + b :].view(rows, width),
            kv_blocks=self.kv_blocks,
        )

    def commit(self, seqs: Sequence[int], tokens: Sequence[int]) -> None:
        """Advance the lengths after the model ran the step `prepare` returned.

        Raises:
            ValueError: a sequence has no prepared step, or was prepared with another count.
        """
        found = self._check_step("commit", seqs, tokens)
        for seq_id, seq, n in zip(seqs, found, tokens):
            if seq.pending is None:
                raise ValueError(f"commit: sequence {seq_id} has no prepared step; call prepare first")
            if seq.pending[0] != n:
                raise ValueError(
                    f"commit: sequence {seq_id} was prepared with {seq.pending[0]} tokens, not {n}"
                )
        for seq in found:
            self._advance(seq)

    step = commit

    def _advance(self, seq: _Sequence) -> None:
        assert seq.pending is not None
        n, ids = seq.pending
        seq.pending = None
        seq.length += n
        if ids is None or seq.tokens is None or not self.prefix_caching:
            seq.tokens = None  # unknown tokens (or no sharing): later pages are not keyed
            return
        seq.tokens.extend(ids)
        while (len(seq.keys) + 1) * self.page_size <= seq.length:
            index = len(seq.keys)
            page = seq.tokens[index * self.page_size : (index + 1) * self.page_size]
            seq.keys.append(chain_hash(seq.keys[-1] if seq.keys else None, page))
            self.pool.register(seq.pages[index], seq.keys[-1])

    # --- inspection -------------------------------------------------------------------
    def gather(self, seq_id: int, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A sequence's cached K and V for one layer, each `[length, n_kv_heads, head_dim]`."""
        seq = self._get("gather", seq_id)
        if not 0 <= layer_idx < self.params.num_layers:
            raise ValueError(f"gather: layer_idx must be in 0..{self.params.num_layers - 1}, got {layer_idx}")
        device = self.kv_blocks.device
        pos = torch.arange(seq.length, device=device)
        blocks = torch.tensor(seq.pages, dtype=torch.int64, device=device)[pos // self.page_size]
        slots = pos % self.page_size
        k = self.kv_blocks[blocks, 0, layer_idx, slots]
        v = self.kv_blocks[blocks, 1, layer_idx, slots]
        return k, v

    def input_types(self) -> list[TensorType | BufferType]:
        """Graph input types for `Batch.kv_inputs`: kv_blocks, cache_lengths, lookup_table."""
        u32 = DType.uint32
        return [
            BufferType(self.params.dtype, list(self.kv_blocks.shape), self.device),
            TensorType(u32, ["batch"], self.device),
            TensorType(u32, ["batch", "max_pages"], self.device),
        ]
