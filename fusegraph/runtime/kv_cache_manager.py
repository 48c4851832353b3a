"""`PagedKVCacheManager`: the host side of the paged KV cache.

It owns `kv_blocks [num_blocks, 2, num_layers, page_size, n_kv_heads, head_dim]`
(allocated with zeros, so a never-written slot reads as 0 rather than as garbage), hands
out blocks to sequences, and builds each step's metadata: `row_offsets`, `cache_lengths`
and `lookup_table` (uint32). A sequence reserves all the pages of its `max_len` when it
is claimed; its unused lookup entries hold `NO_BLOCK`, which the store ops refuse.

Example:
    >>> manager = PagedKVCacheManager(kv_params, num_blocks=64)
    >>> seqs = [manager.claim(max_len=64) for _ in range(3)]
    >>> batch = manager.prepare(seqs, [5, 17, 1])
    >>> (y,) = model(x, batch.row_offsets, *batch.kv_inputs)
    >>> manager.commit(seqs, [5, 17, 1])
    >>> k, v = manager.gather(seqs[0], layer_idx=0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fusegraph.compiler.devices import DeviceRef
from fusegraph.compiler.dtypes import DType
from fusegraph.compiler.types import BufferType, TensorType
from fusegraph.ops._ragged import NO_BLOCK

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
    max_len: int
    length: int = 0


class PagedKVCacheManager:
    """Allocates the paged KV cache and tracks which blocks each sequence owns.

    Args:
        params: a `KVCacheParams` (or any object with `dtype` (a fusegraph DType),
            `n_kv_heads`, `head_dim`, `num_layers`, `page_size` and optionally `devices`).
        num_blocks: the number of pages of `page_size` tokens in the cache.
        devices: overrides `params.devices`; the cache lives on the first one (default CPU).
    """

    def __init__(self, params: Any, num_blocks: int, devices: Sequence[DeviceRef] | None = None) -> None:
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
        if num_blocks < 1:
            raise ValueError(f"PagedKVCacheManager: num_blocks must be >= 1, got {num_blocks=}")
        devices = devices or getattr(params, "devices", None) or [DeviceRef.CPU()]
        self.params = params
        self.num_blocks = num_blocks
        self.device = devices[0]
        self.page_size = int(params.page_size)
        shape = (num_blocks, 2, params.num_layers, self.page_size, params.n_kv_heads, params.head_dim)
        self.kv_blocks = torch.zeros(shape, dtype=params.dtype.to_torch(), device=self.device.to_torch())
        self._free = list(range(num_blocks))
        self._seqs: dict[int, _Sequence] = {}
        self._next_id = 0

    # --- sequences --------------------------------------------------------------------
    @property
    def free_blocks(self) -> int:
        """Blocks not reserved by any sequence."""
        return len(self._free)

    def claim(self, max_len: int) -> int:
        """Reserve the pages for a sequence of up to `max_len` tokens; returns its id.

        Raises:
            ValueError: if `max_len < 1` or fewer than `ceil(max_len / page_size)` blocks are free.
        """
        if max_len < 1:
            raise ValueError(f"claim: max_len must be >= 1, got {max_len=}")
        pages = -(-max_len // self.page_size)
        if pages > len(self._free):
            raise ValueError(
                f"claim: max_len={max_len} needs {pages} blocks of {self.page_size} tokens, "
                f"but only {len(self._free)} of {self.num_blocks} are free"
            )
        seq_id, self._next_id = self._next_id, self._next_id + 1
        self._seqs[seq_id] = _Sequence(pages=self._free[:pages], max_len=max_len)
        del self._free[:pages]
        return seq_id

    def release(self, seq_id: int) -> None:
        """Return a sequence's blocks to the free list."""
        seq = self._get("release", seq_id)
        self._free.extend(seq.pages)
        self._free.sort()
        del self._seqs[seq_id]

    def length(self, seq_id: int) -> int:
        """Tokens cached for the sequence."""
        return self._get("length", seq_id).length

    def _get(self, what: str, seq_id: int) -> _Sequence:
        if (seq := self._seqs.get(seq_id)) is None:
            raise ValueError(f"{what}: unknown sequence {seq_id}; claimed: {sorted(self._seqs)}")
        return seq

    # --- steps ------------------------------------------------------------------------
    def _check_step(self, what: str, seqs: Sequence[int], tokens: Sequence[int]) -> list[_Sequence]:
        if len(seqs) != len(tokens):
            raise ValueError(f"{what}: {len(seqs)} sequences but {len(tokens)} token counts")
        if not seqs:
            raise ValueError(f"{what}: needs at least one sequence")
        if len(set(seqs)) != len(seqs):
            raise ValueError(f"{what}: a sequence appears twice in {list(seqs)}")
        found = [self._get(what, s) for s in seqs]
        for seq_id, seq, n in zip(seqs, found, tokens, strict=True):
            if n < 0:
                raise ValueError(f"{what}: sequence {seq_id}: token count must be >= 0, got {n}")
            if seq.length + n > seq.max_len:
                raise ValueError(
                    f"{what}: sequence {seq_id} holds {seq.length} tokens; {n} more would reach "
                    f"position {seq.length + n - 1}, past its reserved max_len={seq.max_len} "
                    f"({len(seq.pages)} pages of {self.page_size})"
                )
        return found

    def prepare(self, seqs: Sequence[int], tokens: Sequence[int]) -> Batch:
        """The metadata for a step in which sequence `seqs[i]` adds `tokens[i]` tokens.

        Nothing is written. Raises ValueError if a sequence would exceed its reserved length.
        """
        found = self._check_step("prepare", seqs, tokens)
        offsets = [0]
        for n in tokens:
            offsets.append(offsets[-1] + n)
        width = max(len(s.pages) for s in found)
        lookup = [s.pages + [NO_BLOCK] * (width - len(s.pages)) for s in found]
        return Batch(
            row_offsets=self._u32(offsets),
            cache_lengths=self._u32([s.length for s in found]),
            lookup_table=self._u32(lookup),
            kv_blocks=self.kv_blocks,
        )

    def commit(self, seqs: Sequence[int], tokens: Sequence[int]) -> None:
        """Advance the cache lengths after the model has run the step from `prepare`."""
        found = self._check_step("commit", seqs, tokens)
        for seq, n in zip(found, tokens, strict=True):
            seq.length += n

    step = commit

    def _u32(self, values: list[Any]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.int64).to(torch.uint32).to(self.device.to_torch())

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
