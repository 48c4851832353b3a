"""Tensor-parallel sharding: the strategy, each rank's share of the heads and channels,
and the named errors.

Megatron/vLLM layout, one shard per rank:

- attention: q/k/v are column-parallel (rank r holds query heads
  `[r·H/n, (r+1)·H/n)` and the kv heads they read); `o_proj` is row-parallel (its input rows
  are those heads) and its output is summed with `fg.allreduce`;
- GQA with `n_kv_heads < n`: each kv head is replicated on `n / n_kv_heads` ranks (vLLM's
  `num_kv_head_replicas`), so every rank still holds one kv head;
- each rank's KV cache holds only its kv heads (`n_kv_heads` of its `KVCacheParams`);
- MLP: `gate_proj`/`up_proj` column-parallel over the intermediate channels, `down_proj`
  row-parallel (then `fg.allreduce`);
- `lm_head` column-parallel over the vocabulary, then `fg.allgather` of the logits;
- embeddings and norms are replicated.

Example:
    >>> strategy = ShardingStrategy.tensor_parallel(2)
    >>> layout = strategy.layout(n_heads=8, n_kv_heads=2, head_dim=16, intermediate_size=128,
    ...                          vocab_size=256)
    >>> layout.rank(1).q_heads, layout.rank(1).kv_heads
    (range(4, 8), range(1, 2))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fusegraph.compiler.devices import DeviceRef


class ShardingError(ValueError):
    """A model cannot be sharded as asked; the message names the field and the sizes."""


class HeadsNotDivisibleError(ShardingError):
    """`n_heads` (or `n_kv_heads`) does not split evenly over the world size."""


class GroupSplitError(ShardingError):
    """A row-parallel split would cut a GPTQ quantization group between two ranks."""


class WorldSizeMismatchError(ShardingError):
    """The world size differs from the number of devices (or of launched processes)."""


@dataclass(frozen=True)
class ShardingStrategy:
    """How a model's weights are split over devices.

    Attributes:
        world_size: How many ranks share the model (1: not sharded).
        devices: One device per rank, when given (`"cpu"`, `"cuda:0"`, ...).

    Example:
        >>> ShardingStrategy.tensor_parallel(2).world_size
        2
        >>> ShardingStrategy.from_devices(["cuda:0", "cuda:1"]).world_size
        2
    """

    world_size: int = 1
    devices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = self.world_size
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ShardingError(f"ShardingStrategy: world_size must be a positive int, got {n!r}")
        if self.devices and len(self.devices) != n:
            raise WorldSizeMismatchError(
                f"ShardingStrategy: world_size ({n}) != number of devices ({len(self.devices)}: "
                f"{list(self.devices)}); give one device per rank"
            )

    @staticmethod
    def tensor_parallel(n: int, devices: Sequence[str | DeviceRef] | None = None) -> ShardingStrategy:
        """Shard heads and channels over `n` ranks (optionally naming each rank's device)."""
        return ShardingStrategy(n, tuple(_device_str(d) for d in devices or ()))

    @staticmethod
    def from_devices(devices: Sequence[str | DeviceRef]) -> ShardingStrategy:
        """One rank per device: `devices=[gpu0, gpu1]` means tensor parallelism over 2."""
        if not devices:
            raise ShardingError("ShardingStrategy.from_devices: devices must name at least one device")
        return ShardingStrategy(len(devices), tuple(_device_str(d) for d in devices))

    @property
    def is_sharded(self) -> bool:
        """Whether more than one rank shares the model."""
        return self.world_size > 1

    def device(self, rank: int) -> str | None:
        """The device of `rank`, if devices were given."""
        return self.devices[rank] if self.devices else None

    def check_world_size(self, world_size: int, what: str = "the process group") -> None:
        """Raise `WorldSizeMismatchError` when `world_size` differs from this strategy's."""
        if world_size != self.world_size:
            raise WorldSizeMismatchError(
                f"tensor parallel: the sharding strategy has world_size {self.world_size}, "
                f"but {what} has {world_size} ranks"
            )

    def layout(
        self,
        *,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        intermediate_size: int | None = None,
        vocab_size: int | None = None,
    ) -> TensorParallelLayout:
        """Each rank's heads and channels; raises the named errors for uneven splits."""
        return TensorParallelLayout(
            self.world_size, n_heads, n_kv_heads, head_dim, intermediate_size, vocab_size
        )


def _device_str(device: str | DeviceRef) -> str:
    to_torch = getattr(device, "to_torch", None)
    return str(to_torch()) if callable(to_torch) else str(device)


@dataclass(frozen=True)
class RankShare:
    """What one rank holds.

    Attributes:
        rank: The rank.
        q_heads: Global indices of its query heads.
        kv_heads: Global indices of its kv heads (one replicated head when n_kv < world).
        head_dim: Size of one head.
        channels: Its intermediate (MLP) channels, or None when the layout has no MLP.
        vocab: Its vocabulary rows of `lm_head`, or None.
    """

    rank: int
    q_heads: range
    kv_heads: range
    head_dim: int
    channels: range | None
    vocab: range | None

    @property
    def n_heads(self) -> int:
        """Query heads on this rank."""
        return len(self.q_heads)

    @property
    def n_kv_heads(self) -> int:
        """Key/value heads on this rank (what its KV cache holds)."""
        return len(self.kv_heads)

    @property
    def q_cols(self) -> range:
        """Its columns of q (`q_proj`'s N), and its rows of `o_proj`'s K."""
        return range(self.q_heads.start * self.head_dim, self.q_heads.stop * self.head_dim)

    @property
    def kv_cols(self) -> range:
        """Its columns of k and of v (`k_proj`/`v_proj`'s N)."""
        return range(self.kv_heads.start * self.head_dim, self.kv_heads.stop * self.head_dim)

    @property
    def intermediate_size(self) -> int | None:
        """Intermediate channels on this rank."""
        return None if self.channels is None else len(self.channels)

    @property
    def vocab_size(self) -> int | None:
        """`lm_head` rows on this rank."""
        return None if self.vocab is None else len(self.vocab)


@dataclass(frozen=True)
class TensorParallelLayout:
    """The split of one model over `world_size` ranks (see the module docstring).

    Raises:
        HeadsNotDivisibleError: `n_heads % world_size`, or `n_kv_heads` neither a multiple
            nor a divisor of `world_size`.
        ShardingError: `intermediate_size` or `vocab_size` not divisible by `world_size`.
    """

    world_size: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate_size: int | None = None
    vocab_size: int | None = None

    def __post_init__(self) -> None:
        n, h, hkv = self.world_size, self.n_heads, self.n_kv_heads
        if h % n:
            raise HeadsNotDivisibleError(
                f"tensor parallel: num_attention_heads ({h}) must be divisible by the world size ({n})"
            )
        if hkv >= n and hkv % n:
            raise HeadsNotDivisibleError(
                f"tensor parallel: num_key_value_heads ({hkv}) must be divisible by the world size ({n})"
            )
        if hkv < n and n % hkv:
            raise HeadsNotDivisibleError(
                f"tensor parallel: with num_key_value_heads ({hkv}) < world size ({n}), the world size "
                f"must be a multiple of num_key_value_heads so each kv head is replicated evenly"
            )
        for field, size in (("intermediate_size", self.intermediate_size), ("vocab_size", self.vocab_size)):
            if size is not None and size % n:
                raise ShardingError(
                    f"tensor parallel: {field} ({size}) must be divisible by the world size ({n})"
                )

    @property
    def kv_replicas(self) -> int:
        """On how many ranks each kv head lives (1 unless n_kv_heads < world_size)."""
        return max(1, self.world_size // self.n_kv_heads)

    def rank(self, rank: int) -> RankShare:
        """The share of `rank` (0 <= rank < world_size)."""
        n = self.world_size
        if not 0 <= rank < n:
            raise ShardingError(f"tensor parallel: rank must be in [0, {n}), got {rank}")
        q = self.n_heads // n
        if self.n_kv_heads >= n:
            kv_per = self.n_kv_heads // n
            kv = range(rank * kv_per, (rank + 1) * kv_per)
        else:  # vLLM: rank r holds kv head r // replicas
            head = rank // self.kv_replicas
            kv = range(head, head + 1)
        return RankShare(
            rank,
            range(rank * q, (rank + 1) * q),
            kv,
            self.head_dim,
            _even(self.intermediate_size, n, rank),
            _even(self.vocab_size, n, rank),
        )


def _even(size: int | None, n: int, rank: int) -> range | None:
    if size is None:
        return None
    per = size // n
    return range(rank * per, (rank + 1) * per)
