"""KV-cache parameters and the graph values of a paged KV cache (MAX's layout).

`kv_blocks` is `[num_blocks, 2, num_layers, page_size, n_kv_heads, head_dim]`; token `p` of
sequence `b` lives in block `lookup_table[b, p // page_size]`, slot `p % page_size`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fusegraph.compiler import BufferValue, DeviceRef, DType, TensorValue


@dataclass(frozen=True)
class KVCacheParams:
    """The shape of a paged KV cache.

    Args:
        dtype: Element type of the cached keys and values.
        n_kv_heads: Key/value heads per layer.
        head_dim: Size of one head.
        num_layers: Layers sharing the cache.
        page_size: Tokens per block; any positive integer.
        devices: Where the cache lives (default: the CPU).

    Example:
        >>> KVCacheParams(dtype=DType.float32, n_kv_heads=2, head_dim=16, num_layers=1,
        ...               page_size=16, devices=[DeviceRef.CPU()])
    """

    dtype: DType
    n_kv_heads: int
    head_dim: int
    num_layers: int
    page_size: int
    devices: Sequence[DeviceRef] = field(default_factory=lambda: [DeviceRef.CPU()])

    def __post_init__(self) -> None:
        for name in ("n_kv_heads", "head_dim", "num_layers", "page_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"KVCacheParams: {name} must be a positive int, got {value!r}")
        floats = [d.name for d in DType if d.is_float]
        if not isinstance(self.dtype, DType) or not self.dtype.is_float:
            raise ValueError(
                f"KVCacheParams: dtype must be a float DType ({', '.join(f'DType.{n}' for n in floats)}), "
                f"got {self.dtype!r}"
            )
        if isinstance(self.devices, (str, DeviceRef)) or not self.devices:
            raise ValueError(
                f"KVCacheParams: devices must be a non-empty list of DeviceRef, got {self.devices!r}"
            )
        if bad := [d for d in self.devices if not isinstance(d, DeviceRef)]:
            raise ValueError(
                f"KVCacheParams: devices must hold DeviceRef values (DeviceRef.CPU(), DeviceRef.GPU(0)), "
                f"got {bad[0]!r}"
            )
        object.__setattr__(self, "devices", list(self.devices))

    @property
    def device(self) -> DeviceRef:
        """The first (on a single device: the only) device."""
        return self.devices[0]

    def blocks_shape(self, num_blocks: int) -> list[int]:
        """`[num_blocks, 2, num_layers, page_size, n_kv_heads, head_dim]`."""
        return [num_blocks, 2, self.num_layers, self.page_size, self.n_kv_heads, self.head_dim]


@dataclass
class PagedCacheValues:
    """The graph values a layer reads and writes its cache through (MAX's name).

    A layer that stores into the cache replaces `kv_blocks` with the buffer version it wrote,
    so the next layer (and `fg.attention.paged`) sees the writes in order.

    Args:
        kv_blocks: The current version of the paged blocks buffer.
        cache_lengths: uint32 `[batch]`: tokens already cached per sequence.
        lookup_table: uint32 `[batch, max_pages]`: block index of each page.
    """

    kv_blocks: BufferValue
    cache_lengths: TensorValue
    lookup_table: TensorValue
