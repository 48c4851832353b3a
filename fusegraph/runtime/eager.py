"""The eager executor: the graph's FX module (in-place form) run by PyTorch.

Weights are checked and moved to the device once, at compile time. Each call checks the
inputs against the graph's input types, binds the symbolic dims, and runs the module; the
buffer inputs (the KV blocks) are written in the caller's tensors.

Example:
    >>> model = fusegraph.compile(g, backend="eager", device="cpu", weights=state_dict)
    >>> (y,) = model(x, row_offsets, kv_blocks, cache_lengths, lookup_table)
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch

from fusegraph.compiler.dims import Dim
from fusegraph.compiler.graph import Graph
from fusegraph.compiler.lowering import to_fx
from fusegraph.compiler.types import BufferType, TensorType
from fusegraph.runtime.fold import fold_constants
from fusegraph.runtime.input_checks import InputChecks, check_weights
from fusegraph.runtime.pipeline import run_pipeline
from fusegraph.runtime.write_guard import write_guards


class CompiledGraph:
    """A graph compiled for the eager backend: `model(*inputs) -> tuple[Tensor, ...]`.

    Attributes:
        graph: the graph that runs: a clone of the caller's graph after `pipeline` (later
            edits to the caller's graph do not apply).
        pipeline: the pipeline text that ran before execution, or None (`runtime/pipeline.py`).
        pass_stats: what each pass did (`PassStatistics`), or None.
        device: the torch device string the graph runs on ("cpu" or "cuda[:N]").
        module: the `torch.fx.GraphModule` that runs (`to_fx(mode="custom", inplace=True)`).

    The weights are checked, moved to `device` and bound into `module` as buffers once;
    everything computed from weights and constants alone is folded then (`fold_constants`).
    """

    def __init__(
        self,
        graph: Graph,
        device: str = "cpu",
        weights: Mapping[str, torch.Tensor] | None = None,
        cuda_graphs: bool = False,
        pipeline: str | None = None,
    ) -> None:
        _check_device(device)
        graph.verify()
        self.graph, self.pipeline, self.pass_stats = run_pipeline(graph, pipeline, "eager", device)
        self.device = device
        self.input_types = [cast(TensorType | BufferType, a.type) for a in self.graph.block.args]
        self.num_outputs = len(self.graph.outputs)
        bound = bind_weights(self.graph.weights, weights or {}, device)
        check_weights(self.graph, dict(zip(self.graph.weights, bound)))  # g_idx range, finite scales
        if torch.device(device).type == "cuda":
            load_cuda_kernels()
        self.module = fold_constants(
            to_fx(self.graph, mode="custom", inplace=True, device=device),
            dict(zip(self.graph.weights, bound)),
            weight_dims(self.graph.weights, bound),
        )
        del bound  # the module keeps what it reads
        self._cuda_graphs = CudaGraphRunner(self.module, device) if cuda_graphs else None
        self._write_guards = write_guards(self.graph)
        # The shared host checks (input_checks.py, also run by IREE); CUDA: see the write guards.
        self._input_checks = InputChecks.for_graph(self.graph, strict=False) if device == "cpu" else None

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run the graph. Buffer inputs are updated in place; returns the graph outputs."""
        dims = check_inputs(self.input_types, inputs, self.device)
        if self._input_checks is not None:
            self._input_checks.check(inputs, dims)
        for guard in self._write_guards:  # kernels and graph replays run no per-op check
            guard.check(inputs, dims)
        if self._cuda_graphs is not None:
            outputs = self._cuda_graphs.run(inputs, self.input_types)
        else:
            outputs = self.module(*inputs)
        return tuple(outputs[: self.num_outputs])

    def __repr__(self) -> str:
        return f"CompiledGraph({self.graph.name!r}, backend='eager', device={self.device!r})"


def weight_dims(expected: Mapping[str, TensorType], bound: Sequence[torch.Tensor]) -> dict[str, int]:
    """The symbolic dims that the bound weights' shapes fix (name -> size)."""
    dims: dict[str, int] = {}
    for t, value in zip(expected.values(), bound):
        for d, size in zip(t.shape, value.shape):
            if d.is_symbolic:
                dims.setdefault(d.name, int(size))
    return dims


def _check_device(device: str) -> None:
    try:
        kind = torch.device(device).type
    except RuntimeError:
        kind = None
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"compile: device must be 'cpu' or 'cuda[:N]', got {device!r}")


def load_cuda_kernels() -> None:
    """Import `fusegraph.runtime.kernels` (it registers the CUDA kernels) if it exists."""
    try:
        importlib.import_module("fusegraph.runtime.kernels")
    except ModuleNotFoundError as err:
        # Only a missing kernels package is optional; a broken one must surface.
        if err.name not in ("fusegraph.runtime.kernels", "triton"):
            raise


def bind_weights(
    expected: Mapping[str, TensorType], given: Mapping[str, torch.Tensor], device: str
) -> list[torch.Tensor]:
    """The weight tensors in `expected` order, checked and moved to `device` once.

    Raises:
        ValueError: a weight is missing, unknown, or has the wrong shape or dtype; the
            message names the weight, what was expected and what was given.
    """
    missing = [n for n in expected if n not in given]
    unknown = [n for n in given if n not in expected]
    if missing or unknown:
        raise ValueError(
            f"compile: weights do not match the graph: missing {missing}, unknown {unknown}; "
            f"the graph's weights are {list(expected)}"
        )
    bound = []
    for name, t in expected.items():
        value = given[name]
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"compile: weight {name!r} must be a torch.Tensor, got {type(value).__name__}")
        _check_weight(name, t, value)
        bound.append(value.to(device))
    return bound


def _check_weight(name: str, t: TensorType, value: torch.Tensor) -> None:
    want_dtype = t.dtype.to_torch()
    if value.dtype != want_dtype:
        raise ValueError(f"compile: weight {name!r} dtype: expected {want_dtype}, got {value.dtype}")
    shape_ok = value.dim() == t.rank and all(
        not d.is_static or d.value == s for d, s in zip(t.shape, value.shape)
    )
    if not shape_ok:
        raise ValueError(
            f"compile: weight {name!r} shape: expected {_shape(t.shape)}, got {list(value.shape)}"
        )


def check_inputs(
    types: Sequence[TensorType | BufferType], inputs: Sequence[Any], device: str
) -> dict[str, int]:
    """Check inputs against the graph's input types; returns the symbolic dim bindings.

    Raises:
        ValueError: wrong count, a non-tensor, wrong dtype, device or rank, a static dim
            mismatch, or a symbolic name bound to two sizes (naming input, dim and name).
    """
    if len(inputs) != len(types):
        raise ValueError(f"graph expects {len(types)} inputs, got {len(inputs)}")
    want_device = torch.device(device)
    bindings: dict[str, tuple[int, int, int]] = {}
    for i, (t, x) in enumerate(zip(types, inputs)):
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"input {i}: expected a torch.Tensor, got {type(x).__name__}")
        if x.dtype != t.dtype.to_torch():
            raise ValueError(f"input {i}: dtype expected {t.dtype.to_torch()}, got {x.dtype}")
        if x.device.type != want_device.type:
            raise ValueError(f"input {i}: device expected {device}, got {x.device}")
        if x.dim() != t.rank:
            raise ValueError(f"input {i}: rank expected {t.rank} {_shape(t.shape)}, got {list(x.shape)}")
        for axis, (d, size) in enumerate(zip(t.shape, x.shape)):
            _check_dim(i, axis, d, size, bindings)
    return {name: size for name, (size, _, _) in bindings.items()}


def _check_dim(i: int, axis: int, d: Dim, size: int, bindings: dict[str, tuple[int, int, int]]) -> None:
    if d.is_static:
        if d.value != size:
            raise ValueError(f"input {i}: dim {axis} expected {d.value}, got {size}")
        return
    if (seen := bindings.get(d.name)) is None:
        bindings[d.name] = (size, i, axis)
        return
    if seen[0] != size:
        raise ValueError(
            f"input {i}: dim {axis} is {d.name!r} = {size}, but input {seen[1]} dim {seen[2]} "
            f"bound {d.name!r} = {seen[0]}"
        )


def _shape(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


class CudaGraphRunner:
    """Captures the module as a CUDA graph per input-shape key and replays it.

    The first call for a key runs eagerly on a side stream (the warm-up, whose results are
    returned), then captures the module on static copies of the tensor inputs. Later calls
    copy the inputs into those static tensors and replay. Buffer inputs are used directly:
    they are persistent and written in place, so the key includes their data pointers.
    Outputs are cloned out of the graph's static outputs, so they survive the next replay.
    """

    def __init__(self, module: torch.fx.GraphModule, device: str) -> None:
        if torch.device(device).type != "cuda":
            raise ValueError(f"compile: cuda_graphs=True needs device='cuda', got device={device!r}")
        if not torch.cuda.is_available():
            raise ValueError(
                "compile: cuda_graphs=True needs a CUDA device; torch.cuda.is_available() is False"
            )
        self.module = module
        self.device = device
        self.pool = torch.cuda.graph_pool_handle()
        self.captured: dict[tuple, tuple[torch.cuda.CUDAGraph, list[torch.Tensor | None], Any]] = {}

    def run(self, inputs: Sequence[torch.Tensor], types: Sequence[Any]) -> Sequence[torch.Tensor]:
        """Replay the graph captured for these input shapes, capturing it on first use."""
        key = _shape_key(inputs, types)
        if (entry := self.captured.get(key)) is None:
            outputs = self._warm_up(inputs)
            self.captured[key] = self._capture(inputs, types)
            return outputs
        graph, static_inputs, static_outputs = entry
        for static, x in zip(static_inputs, inputs):
            if static is not None:
                static.copy_(x)
        graph.replay()
        return [o.clone() for o in static_outputs]

    def _warm_up(self, inputs: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            outputs = self.module(*inputs)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        return outputs

    def _capture(self, inputs: Sequence[torch.Tensor], types: Sequence[Any]) -> tuple:
        static_inputs: list[torch.Tensor | None] = [
            None if isinstance(t, BufferType) else x.clone() for x, t in zip(inputs, types)
        ]
        args = [x if s is None else s for x, s in zip(inputs, static_inputs)]
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self.pool):
                static_outputs = self.module(*args)
        except RuntimeError as err:
            shapes = [list(x.shape) for x in inputs]
            raise RuntimeError(
                f"cuda_graphs: capturing the graph for input shapes {shapes} failed: {err}\n"
                "An op synchronizes with the host during capture (.item(), .tolist(), a CPU copy); "
                "compile with cuda_graphs=False, or skip that host work when "
                "torch.cuda.is_current_stream_capturing()."
            ) from err
        return graph, static_inputs, static_outputs


def _shape_key(inputs: Sequence[torch.Tensor], types: Sequence[Any]) -> tuple:
    return tuple(
        (tuple(x.shape), x.data_ptr() if isinstance(t, BufferType) else None) for x, t in zip(inputs, types)
    )
