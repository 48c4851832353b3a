"""`BlockPool`: reference-counted KV blocks with a prefix cache and LRU eviction.

The pool only does the bookkeeping of block ids; `PagedKVCacheManager` owns the tensor.
A block is in exactly one of three states:
- in use: its reference count is >= 1 (several sequences may share it);
- cached: unused, but it holds a full page whose tokens are known, registered under the
  chained hash of its token prefix; a later prompt with that prefix revives it;
- free: unused and holding nothing anyone can find.

Allocation takes a free block first, else evicts the least recently released cached block.
`KVCacheFullError` (re-exported by `kv_cache_manager`) is what a step that needs more blocks
than `num_free` raises.

Example:
    >>> pool = BlockPool(4)
    >>> b = pool.allocate()
    >>> pool.register(b, chain_hash(None, [1, 2, 3, 4]))
    >>> pool.release(b)          # cached: still findable
    >>> pool.lookup(chain_hash(None, [1, 2, 3, 4])) == b
    True
"""

from __future__ import annotations

import hashlib
import heapq
from array import array
from collections import OrderedDict
from collections.abc import Sequence


def chain_hash(parent: bytes | None, tokens: Sequence[int]) -> bytes:
    """The key of a full page: a digest of the previous page's key and this page's tokens.

    Chaining makes the key name the whole prefix, so equal pages after different prefixes
    never collide.
    """
    h = hashlib.blake2b(parent or b"", digest_size=16)
    h.update(array("q", tokens).tobytes())
    return h.digest()


class KVCacheFullError(RuntimeError):
    """`prepare` needs more blocks than the cache has free; nothing was changed.

    Attributes:
        needed: blocks the step needed.
        free: blocks that were free (including evictable cached pages).
    """

    def __init__(self, needed: int, free: int, num_blocks: int) -> None:
        super().__init__(
            f"prepare: the KV cache is full: the step needs {needed} more blocks but only {free} "
            f"of {num_blocks} are free; release or preempt a sequence, or make num_blocks larger"
        )
        self.needed, self.free = needed, free


class BlockPool:
    """Reference counts, the free list, and the prefix cache of `num_blocks` block ids."""

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.refs = [0] * num_blocks
        self._free = list(range(num_blocks))  # a heap: the lowest id is handed out first
        self._cached: OrderedDict[int, None] = OrderedDict()  # ref 0 and hashed, oldest first
        self._key_of: dict[int, bytes] = {}
        self._block_of: dict[bytes, int] = {}
        self.evictions = 0

    @property
    def num_free(self) -> int:
        """Blocks an allocation can take: the free ones plus the evictable cached ones."""
        return len(self._free) + len(self._cached)

    @property
    def num_cached(self) -> int:
        """Unused blocks that still hold a findable prefix page."""
        return len(self._cached)

    def allocate(self) -> int:
        """A block with reference count 1; evicts the least recently released cached block
        when no block is free. Callers check `num_free` first."""
        if self._free:
            block = heapq.heappop(self._free)
        elif self._cached:
            block, _ = self._cached.popitem(last=False)
            del self._block_of[self._key_of.pop(block)]
            self.evictions += 1
        else:
            raise RuntimeError("BlockPool.allocate: no free block (callers must check num_free)")
        self.refs[block] = 1
        return block

    def retain(self, block: int) -> None:
        """One more user of `block` (a cached block comes back into use)."""
        if self.refs[block] == 0:
            self._cached.pop(block)
        self.refs[block] += 1

    def release(self, block: int) -> None:
        """One user fewer; an unused block becomes cached (if registered) or free."""
        if self.refs[block] < 1:
            raise RuntimeError(f"BlockPool.release: block {block} is not in use")
        self.refs[block] -= 1
        if self.refs[block]:
            return
        if block in self._key_of:
            self._cached[block] = None  # most recently released: evicted last
        else:
            heapq.heappush(self._free, block)

    def register(self, block: int, key: bytes) -> bool:
        """Make the full page in `block` findable under `key`; False if the key is taken."""
        if key in self._block_of or block in self._key_of:
            return False
        self._block_of[key] = block
        self._key_of[block] = key
        return True

    def lookup(self, key: bytes) -> int | None:
        """The block registered under `key` (in use or cached), if any."""
        return self._block_of.get(key)

    def is_registered(self, block: int) -> bool:
        """Whether `block` holds a registered (hence immutable) full page."""
        return block in self._key_of
