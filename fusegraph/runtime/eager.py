"""The eager executor: the graph's FX module (in-place form) run by PyTorch.

Weights are checked, moved to the device and folded into the module once, at compile time.
Each call binds the symbolic dims (the signature is checked once per shape key), runs the
metadata checks (on the host on CPU, on the device on CUDA) and the module; the buffer
inputs (the KV blocks) are written in the caller's tensors. `model.bind(...)` gives a
zero-copy step for decode loops.

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
from fusegraph.compiler.types import BufferType, TensorType, shape_str
from fusegraph.runtime.cuda_graphs import CudaGraphRunner
from fusegraph.runtime.fold import fold_constants
from fusegraph.runtime.input_checks import InputChecks
from fusegraph.runtime.pipeline import run_pipeline
from fusegraph.runtime.profile import ProfileReport, profile_steps
from fusegraph.runtime.weight_checks import check_weights
from fusegraph.runtime.write_guard import DeviceWriteGuards, write_guards


class CompiledGraph:
    """A graph compiled for the eager backend: `model(*inputs) -> tuple[Tensor, ...]`.

    Attributes:
        graph: the graph that runs: a clone of the caller's graph after `pipeline` (later
            edits to the caller's graph do not apply).
        pipeline: the pipeline text that ran before execution, or None (`runtime/pipeline.py`).
        pass_stats: what each pass did (`PassStatistics`), or None.
        device: the torch device string the graph runs on ("cpu" or "cuda[:N]").
        module: the `torch.fx.GraphModule` that runs (`to_fx(mode="custom", inplace=True)`),
            called as `module(*inputs)`.

    The weights are checked, moved to `device` and bound into `module` as buffers once;
    everything computed from weights and constants alone is folded then (`fold_constants`).
    The input signature (dtypes, ranks, static dims, symbolic dim bindings) is checked once
    per input-shape key. On CUDA no call synchronizes with the host: cache overflows are
    refused on the device and raised at the next call (`write_guard.py`).
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
        on_cuda = torch.device(device).type == "cuda"
        # CPU: the shared host checks (input_checks.py, also run by IREE); an op whose metadata
        # the graph computes checks its own operands when it runs. CUDA: the checks that read no
        # tensor values (shapes, strides, dims) on the host, the metadata values on the device
        # before the step, so (as for IREE) the metadata must be graph inputs.
        self._input_checks = InputChecks.for_graph(self.graph, strict=on_cuda)
        self._check = self._input_checks.check_host_and_perms if on_cuda else self._input_checks.check
        bound = bind_weights(self.graph.weights, weights or {}, device)
        check_weights(self.graph, dict(zip(self.graph.weights, bound)))  # g_idx range, finite scales
        if on_cuda:
            load_cuda_kernels()
        self.module = fold_constants(
            to_fx(self.graph, mode="custom", inplace=True, device=device),
            dict(zip(self.graph.weights, bound)),
            weight_dims(self.graph.weights, bound),
        )
        del bound  # the module keeps what it reads
        guards = write_guards(self.graph) if on_cuda else []
        self._device_guards = DeviceWriteGuards(guards) if guards else None
        self._cuda_graphs = CudaGraphRunner(self._step, device) if cuda_graphs else None
        self._dims_by_key: dict[tuple[tuple[torch.Size, torch.dtype, torch.device], ...], dict[str, int]] = {}

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run the graph. Buffer inputs are updated in place; returns the graph outputs
        (new tensors, which later calls do not overwrite)."""
        dims = self.signature(inputs)
        self._check(inputs, dims)
        if self._device_guards is not None:
            self._device_guards.raise_if_refused(inputs)  # an earlier step's refusal, no sync
        if self._cuda_graphs is not None:
            outputs = self._cuda_graphs.run(inputs, self.input_types, dims)
        else:
            outputs = self._step(inputs, dims)
        if self._device_guards is not None:
            self._device_guards.publish(inputs)
        return tuple(outputs[: self.num_outputs])

    def bind(self, *inputs: torch.Tensor) -> BoundStep:
        """A zero-copy step on these very tensors, which the caller then updates in place.

        The signature is checked here, once. Each `step()` runs the graph on the bound
        tensors: with `cuda_graphs=True` it replays a graph captured on them (the first call
        warms up and captures), with no input copies and no output clones; the returned
        outputs are the graph's static tensors, overwritten by the next `step()`. Shapes are
        fixed: bind again for another batch size.

        Example:
            >>> step = model.bind(x, row_offsets, kv_blocks, cache_lengths, lookup_table)
            >>> for _ in range(n):
            ...     x.copy_(next_hidden); cache_lengths.add_(1)   # in place
            ...     (y,) = step()
        """
        return BoundStep(self, inputs, self.signature(inputs))

    def synchronize(self) -> None:
        """Wait for the queued steps on the latest step's caches, and raise a refused write now
        (rather than at the next call). A no-op on the CPU, where refusals raise at once.

        Raises:
            ValueError: a queued step was refused (what the next call would raise).
        """
        if self._device_guards is not None:
            self._device_guards.raise_if_refused(None, wait=True)

    def profile(self, *inputs: torch.Tensor, steps: int = 20, warmup: int = 3) -> ProfileReport:
        """Time `steps` calls on `inputs`: host overhead per call, wall time per step, and the
        device time of each kernel (CPU: each aten op) per step (`runtime/profile.py`).

        Example:
            >>> print(model.profile(x, row_offsets, kv_blocks, cache_lengths, lookup_table))
        """
        mode = f"pipeline {self.pipeline or 'none'}, cuda_graphs={self._cuda_graphs is not None}"
        title = f"profile of {self.graph.name!r} on {self.device} ({mode})"
        return profile_steps(lambda: self(*inputs), self.device, title, steps, warmup)

    def signature(self, inputs: Sequence[torch.Tensor]) -> dict[str, int]:
        """The symbolic dim bindings of `inputs`, checked once per (shapes, dtypes, devices)."""
        try:
            key = tuple([(x.shape, x.dtype, x.device) for x in inputs])
        except AttributeError:  # a non-tensor: check_inputs names it
            return check_inputs(self.input_types, inputs, self.device)
        if (dims := self._dims_by_key.get(key)) is None:
            dims = check_inputs(self.input_types, inputs, self.device)
            if len(self._dims_by_key) < 256:
                self._dims_by_key[key] = dims
        return dims

    def _step(self, inputs: Sequence[torch.Tensor], dims: dict[str, int]) -> Sequence[torch.Tensor]:
        """One step as the device runs it (and a CUDA graph captures it): checks, then the module."""
        if self._device_guards is not None:
            self._device_guards.launch(inputs, dims)
        # The graph outputs only: the module also returns the written buffers (the caller's
        # tensors), which a CUDA-graph replay must not clone (a whole KV cache per step).
        outputs: Sequence[torch.Tensor] = self.module(*inputs)
        return outputs[: self.num_outputs]

    def __repr__(self) -> str:
        return f"CompiledGraph({self.graph.name!r}, backend='eager', device={self.device!r})"


class BoundStep:
    """`model.bind(*inputs)`: run the graph on fixed tensors the caller updates in place.

    Attributes:
        inputs: the bound tensors, in graph-input order.
    """

    def __init__(self, model: CompiledGraph, inputs: Sequence[torch.Tensor], dims: dict[str, int]) -> None:
        self.model = model
        self.inputs = tuple(inputs)
        self.dims = dims

    def __call__(self) -> tuple[torch.Tensor, ...]:
        """Run one step; returns the outputs (static tensors under cuda_graphs=True)."""
        m = self.model
        m._check(self.inputs, self.dims)
        if m._device_guards is not None:
            m._device_guards.raise_if_refused(self.inputs)
        if m._cuda_graphs is not None:
            outputs = m._cuda_graphs.run_bound(self.inputs, self.dims)
        else:
            outputs = m._step(self.inputs, self.dims)
        if m._device_guards is not None:
            m._device_guards.publish(self.inputs)
        return tuple(outputs[: m.num_outputs])


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
            f"compile: weight {name!r} shape: expected {shape_str(t.shape)}, got {list(value.shape)}"
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
            raise ValueError(f"input {i}: rank expected {t.rank} {shape_str(t.shape)}, got {list(x.shape)}")
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
