"""`tensor_cache.derived`: a value made once per tuple of tensors, made again once one is written, dropped when one
is freed, and keyed by the very tensors and the extra arguments. `zeroed_tickets`: one buffer a kind, grown without
freeing the old one."""

from __future__ import annotations

import gc
import weakref

import torch

from fusegraph.runtime.kernels import tensor_cache
from fusegraph.runtime.kernels.tensor_cache import derived, zeroed_tickets


def test_derived__made_once_then_again_after_a_write() -> None:
    a, b = torch.arange(4.0), torch.tensor([3, 2, 1, 0])
    calls = []

    def build() -> torch.Tensor:
        calls.append(1)
        return a[b]

    first = derived("t", (a, b), build)
    assert derived("t", (a, b), build) is first and len(calls) == 1
    b[0], b[3] = 0, 3  # in place: b's version moves
    again = derived("t", (a, b), build)
    assert len(calls) == 2 and again.tolist() == [0.0, 2.0, 1.0, 3.0]
    assert derived("t", (a, b), build, extra=1) is not again and len(calls) == 3  # other extra arguments
    assert derived("u", (a, b), build) is not again  # another kind


def test_derived__another_tensor_with_equal_values_is_another_entry() -> None:
    a = torch.ones(3)
    first = derived("t", (a,), lambda: a * 2)
    assert derived("t", (a.clone(),), lambda: a * 3) is not first


def test_derived__an_entry_goes_with_its_tensors() -> None:
    a, b = torch.ones(2), torch.zeros(2)
    derived("t", (a, b), lambda: a * 2)
    key = ("t", (id(a), id(b)))
    assert key in tensor_cache._CACHE
    del b
    gc.collect()
    assert key not in tensor_cache._CACHE


def test_zeroed_tickets__reused_by_kind_and_grown_without_freeing_the_old_buffer() -> None:
    # A CUDA graph captured with the old buffer replays its address: growing must keep that buffer alive.
    cpu = torch.device("cpu")
    small = zeroed_tickets("test tickets", cpu, 8, at_least=8)
    assert small.dtype == torch.int32 and small.shape == (8,) and not small.any()
    assert zeroed_tickets("test tickets", cpu, 5) is small  # fits: the same buffer
    assert zeroed_tickets("other tickets", cpu, 5) is not small  # another kind: its own buffer
    old = weakref.ref(small)
    del small
    grown = zeroed_tickets("test tickets", cpu, 20, at_least=8)
    gc.collect()
    assert grown.shape == (20,) and old() is not None
