"""CUDA-graph capture and replay for the eager runtime (`compile(..., cuda_graphs=True)`).

A step is captured once per input-shape key and replayed after that. The first call for a
key runs the step eagerly on a side stream (the warm-up: it JIT-compiles the kernels and its
results are returned), then captures it without running it.

- `run` (what `model(*inputs)` does) captures on static copies of the tensor inputs; each
  later call copies the inputs in, replays, and clones the outputs out, so they survive the
  next replay. Buffer inputs (the KV blocks) are used directly: they are written in place,
  so the key includes their addresses.
- `run_bound` (what `model.bind(...)` steps do) captures on the caller's own tensors: the
  caller updates them in place, and the outputs are the graph's static tensors, overwritten
  by the next replay. No copies at all.

The graphs go with their runner, when its owner is freed: the runner holds a bound-method step weakly, so a compiled
model and its runner make no reference cycle for the garbage collector to free later, perhaps inside another capture,
which destroying a graph would break. For the same reason the collector is off while a graph is captured.
"""

from __future__ import annotations

import gc
import inspect
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch

from fusegraph.compiler.types import BufferType

Step = Callable[[Sequence[torch.Tensor], dict[str, int]], Sequence[torch.Tensor]]
# a captured graph, the static copies of its tensor inputs (None: used in place), its outputs
_Entry = tuple[torch.cuda.CUDAGraph, list[torch.Tensor | None], Sequence[torch.Tensor]]


class CudaGraphRunner:
    """Captures `step(inputs, dims)` as a CUDA graph per key and replays it."""

    def __init__(self, step: Step, device: str) -> None:
        if torch.device(device).type != "cuda":
            raise ValueError(f"compile: cuda_graphs=True needs device='cuda', got device={device!r}")
        if not torch.cuda.is_available():
            raise ValueError(
                "compile: cuda_graphs=True needs a CUDA device; torch.cuda.is_available() is False"
            )
        # a bound method weakly: its object (the compiled model) owns this runner
        self._step_ref: Callable[[], Step | None] = (
            weakref.WeakMethod(step) if inspect.ismethod(step) else lambda: step
        )
        self.device = device
        self.pool = torch.cuda.graph_pool_handle()
        self.captured: dict[tuple[object, ...], _Entry] = {}

    @property
    def step(self) -> Step:
        """The step this runner captures (its object still alive: it owns the runner)."""
        step = self._step_ref()
        if step is None:
            raise RuntimeError("cuda_graphs: the compiled model whose step this runner captures was freed")
        return step

    def run(
        self, inputs: Sequence[torch.Tensor], types: Sequence[Any], dims: dict[str, int]
    ) -> Sequence[torch.Tensor]:
        """Replay the graph captured for these input shapes (capturing it on first use)."""
        key = _shape_key(inputs, types)
        if (entry := self.captured.get(key)) is None:
            outputs = self._warm_up(inputs, dims)
            copies = [None if isinstance(t, BufferType) else x.clone() for x, t in zip(inputs, types)]
            self.captured[key] = self._capture(inputs, copies, dims)
            return outputs
        graph, static_inputs, static_outputs = entry
        for static, x in zip(static_inputs, inputs):
            if static is not None:
                static.copy_(x)
        graph.replay()
        return [o.clone() for o in static_outputs]

    def run_bound(self, inputs: Sequence[torch.Tensor], dims: dict[str, int]) -> Sequence[torch.Tensor]:
        """Replay the graph captured on these very tensors; returns its static outputs."""
        key = ("bound", *((tuple(x.shape), x.data_ptr()) for x in inputs))
        if (entry := self.captured.get(key)) is None:
            self._warm_up(inputs, dims)
            entry = self.captured[key] = self._capture(inputs, [None] * len(inputs), dims)
            entry[0].replay()  # the warm-up's results are transient; this call's are the static ones
            return entry[2]
        entry[0].replay()
        return entry[2]

    def _warm_up(self, inputs: Sequence[torch.Tensor], dims: dict[str, int]) -> Sequence[torch.Tensor]:
        stream = torch.cuda.Stream(device=self.device)  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            outputs = self.step(inputs, dims)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        return outputs

    def _capture(
        self, inputs: Sequence[torch.Tensor], static_inputs: list[torch.Tensor | None], dims: dict[str, int]
    ) -> _Entry:
        args = [x if s is None else s for x, s in zip(inputs, static_inputs)]
        graph = torch.cuda.CUDAGraph()
        step = self.step
        collecting = gc.isenabled()
        gc.disable()  # a dead graph the collector destroyed inside the capture would break it
        try:
            with torch.cuda.graph(graph, pool=self.pool):
                static_outputs = step(args, dims)
        except RuntimeError as err:
            shapes = [list(x.shape) for x in inputs]
            raise RuntimeError(
                f"cuda_graphs: capturing the graph for input shapes {shapes} failed: {err}\n"
                "An op synchronizes with the host during capture (.item(), .tolist(), a CPU copy); "
                "compile with cuda_graphs=False, or skip that host work when "
                "torch.cuda.is_current_stream_capturing()."
            ) from err
        finally:
            if collecting:
                gc.enable()
        return graph, static_inputs, static_outputs


def _shape_key(inputs: Sequence[torch.Tensor], types: Sequence[Any]) -> tuple[object, ...]:
    return tuple(
        (tuple(x.shape), x.data_ptr() if isinstance(t, BufferType) else None) for x, t in zip(inputs, types)
    )
