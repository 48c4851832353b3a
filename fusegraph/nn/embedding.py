"""`Embedding`: token ids to vectors by a row lookup (`fg.gather` on the table)."""

from __future__ import annotations

from fusegraph import ops
from fusegraph.compiler import DeviceRef, DType, TensorValue
from fusegraph.nn.layer import Module


class Embedding(Module):
    """A lookup table `weight` `[vocab_size, hidden_dim]` (HF name `weight`), MAX's `Embedding`.

    Args:
        vocab_size: Rows of the table.
        hidden_dim: Size of each vector.
        dtype: The table's type.
        device: Where the table lives (default CPU).

    Example:
        >>> embed = Embedding(32000, 4096, DType.float16)
        >>> h = embed(tokens)        # int64 [total_seq_len] -> [total_seq_len, 4096]
    """

    def __init__(
        self, vocab_size: int, hidden_dim: int, dtype: DType = DType.float32, device: DeviceRef | None = None
    ) -> None:
        super().__init__()
        device = device if device is not None else DeviceRef.CPU()
        self.vocab_size, self.hidden_dim, self.dtype, self.device = vocab_size, hidden_dim, dtype, device
        self._declare("weight", [vocab_size, hidden_dim], dtype, device)

    def __call__(self, ids: TensorValue) -> TensorValue:
        """The rows of `ids` (int32/int64/uint32, any shape): `ids.shape + [hidden_dim]`."""
        return ops.gather(self.weight("weight"), ids, axis=0)
