"""`CudaGraphRunner` without a GPU (torch.cuda's capture stubbed out): a compiled model and its runner make no
reference cycle, so the model and its graphs go as soon as it is dropped, never later inside another capture by the
garbage collector; the collector is off while a graph is captured and back on after, even when the capture fails."""

from __future__ import annotations

import contextlib
import gc
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import torch

from fusegraph.runtime.cuda_graphs import CudaGraphRunner


@pytest.fixture
def fake_capture(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """torch.cuda as if a GPU were there, its capture a context that records whether the collector was on."""
    seen: dict[str, bool] = {}

    @contextlib.contextmanager
    def graph(cuda_graph: object, pool: object = None) -> Iterator[None]:
        seen["collector on at capture"] = gc.isenabled()
        yield

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: (0, 1))
    monkeypatch.setattr(torch.cuda, "CUDAGraph", object)
    monkeypatch.setattr(torch.cuda, "graph", graph)
    return seen


class _Model:
    """Owns its runner, as `CompiledGraph` does (`self._cuda_graphs = CudaGraphRunner(self._step, device)`)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.collector_on: list[bool] = []
        self.runner = CudaGraphRunner(self.step, "cuda")

    def step(self, inputs: Sequence[torch.Tensor], dims: dict[str, int]) -> Sequence[torch.Tensor]:
        self.collector_on.append(gc.isenabled())
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        return [inputs[0] + 1]


@contextlib.contextmanager
def _collector_off() -> Iterator[None]:
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def test_cuda_graph_runner__its_model_is_freed_when_dropped_with_no_collection(fake_capture: Any) -> None:
    model = _Model()
    runner = weakref.ref(model.runner)
    alive = weakref.ref(model)
    with _collector_off():  # freed by its reference count alone: no cycle waits for the collector
        del model
        assert alive() is None and runner() is None


def test_cuda_graph_runner__captures_with_the_collector_off_and_turns_it_back_on(fake_capture: Any) -> None:
    model = _Model()
    assert gc.isenabled()
    graph, static_inputs, outputs = model.runner._capture([torch.zeros(2)], [None], {})
    assert fake_capture["collector on at capture"] is False and model.collector_on == [False]
    assert gc.isenabled() and static_inputs == [None] and torch.equal(outputs[0], torch.ones(2))

    failing = _Model(fail=True)
    with pytest.raises(
        RuntimeError, match=r"cuda_graphs: capturing the graph for input shapes \[\[3\]\] failed"
    ):
        failing.runner._capture([torch.zeros(3)], [None], {})
    assert gc.isenabled() and failing.collector_on == [False]


def test_cuda_graph_runner__a_plain_function_step_is_kept_and_a_freed_owner_is_named(
    fake_capture: Any,
) -> None:
    def step(inputs: Sequence[torch.Tensor], dims: dict[str, int]) -> Sequence[torch.Tensor]:
        return list(inputs)

    runner = CudaGraphRunner(step, "cuda")
    del step
    assert runner.step([torch.ones(1)], {})[0].item() == 1.0  # a function is held, not a weak reference

    model = _Model()
    orphan = model.runner
    del model
    with pytest.raises(RuntimeError, match="the compiled model whose step this runner captures was freed"):
        orphan.step([torch.ones(1)], {})
