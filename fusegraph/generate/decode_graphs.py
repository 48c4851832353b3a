"""`DecodeGraphs`: CUDA graphs of a model's decode step, one per batch-size bucket.

A decode step feeds one token per sequence, so its shapes depend on the batch size only
(the lookup table has a fixed width). The batch is padded up to the next bucket (the
manager's padding rows write a private scratch page), and the graph captured for that
bucket is replayed. Prefill and mixed steps run the model normally.

Example:
    >>> graphs = DecodeGraphs.for_model(compiled, buckets=(1, 2, 4, 8), max_batch_size=8)
    >>> bucket = graphs.bucket([1, 1, 1])  # 4
    >>> logits = graphs.run(inputs_padded_to_4)[0]  # static: read it before the next replay
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class DecodeGraphs:
    """Replays an eager `CompiledGraph`'s step as CUDA graphs, one per bucket.

    It runs what `CompiledGraph.__call__` runs with `cuda_graphs=True` (the device write
    guards included), through its own `CudaGraphRunner`, so that the same compiled model can
    run prefill steps of any shape uncaptured.
    """

    def __init__(self, model: Any, buckets: Sequence[int]) -> None:
        from fusegraph.runtime.cuda_graphs import CudaGraphRunner

        self.model = model
        self.buckets = sorted(set(buckets))
        self.runner = CudaGraphRunner(model._step, model.device)
        # per shape key: the tensors a graph reads
        self._static: dict[tuple[object, ...], list[torch.Tensor]] = {}

    @classmethod
    def for_model(cls, model: Any, buckets: Sequence[int] | None, max_batch_size: int) -> DecodeGraphs | None:
        """Graphs for an eager model on CUDA; None elsewhere (or with no buckets).

        Raises:
            ValueError: a bucket is not an int >= 1.
        """
        if not buckets:
            return None
        if bad := [b for b in buckets if not isinstance(b, int) or isinstance(b, bool) or b < 1]:
            raise ValueError(f"Generator: cuda_graph_batch_sizes must be ints >= 1, got {bad}")
        from fusegraph.runtime.eager import CompiledGraph

        if not isinstance(model, CompiledGraph) or torch.device(model.device).type != "cuda":
            return None
        usable = [b for b in buckets if b < max_batch_size] + [min(max(buckets), max_batch_size)]
        return cls(model, usable)

    def bucket(self, counts: Sequence[int]) -> int | None:
        """The bucket a step of these token counts replays, or None (not a pure decode step,
        or more sequences than the largest bucket)."""
        if any(n != 1 for n in counts):
            return None
        return next((b for b in self.buckets if b >= len(counts)), None)

    def run(self, inputs: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
        """Replay (capturing on first use) the graph for these padded inputs.

        The inputs are copied into the bucket's own tensors (the cache buffer is used as is)
        and the graph replays on those, so nothing else is copied: the returned outputs (the
        graph outputs, then the cache buffer) are static tensors, valid until the next replay.
        """
        from fusegraph.compiler.types import BufferType

        m = self.model
        key = tuple((tuple(x.shape), x.data_ptr() if isinstance(t, BufferType) else None)
                    for x, t in zip(inputs, m.input_types))  # fmt: skip
        if (static := self._static.get(key)) is None:
            static = [x if isinstance(t, BufferType) else x.clone() for x, t in zip(inputs, m.input_types)]
            self._static[key] = static
        else:
            for s, x in zip(static, inputs):
                if s is not x:
                    s.copy_(x)
        dims = m.signature(static)
        if (guards := m._device_guards) is not None:
            guards.raise_if_refused(static)  # an earlier step's refusal, no sync
        outputs = self.runner.run_bound(static, dims)
        if guards is not None:
            guards.publish(static)
        return outputs
