"""Values derived from tensors (a weight in another order, a flag read from an index tensor), made once and kept
until one of those tensors is written or freed.

The kernels' host code derives such values on the first call, which may cost a host sync or an extra kernel; under
CUDA-graph capture neither is allowed, so an unseen value is not made there (the eager runtime runs every op once
before it captures) and the caller takes its always-correct path instead. Shared by act-order's row-sorted weight
(`gptq_act_order`), the trivial-g_idx check (`kernels/__init__`) and the RMSNorm's weight in perm order (`rms_norm`).

`zeroed_tickets`: the split-K and split-merge kernels' atomic tickets, a zeroed int32 buffer per (kind, device).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import torch

__all__ = ["UNSEEN", "derived", "zeroed_tickets"]

T = TypeVar("T")

UNSEEN: Any = object()
"""What `derived` returns for a value not made yet while a CUDA graph is being captured."""

# (kind, ids of the tensors): (stamp, weak references to the tensors, the value)
_CACHE: dict[tuple[str, tuple[int, ...]], tuple[Hashable, tuple[weakref.ref[torch.Tensor], ...], Any]] = {}


def derived(kind: str, tensors: tuple[torch.Tensor, ...], build: Callable[[], T], extra: Hashable = ()) -> T:
    """`build()` for these very tensors, made once and kept until one of them is written (its `_version` moves), its
    storage changes, or it is freed; `UNSEEN` when not made yet during CUDA-graph capture. `kind` names what is
    derived and `extra` the other arguments it depends on (bits, group size).

    Example:
        >>> w, perm = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2, 0, 1])
        >>> derived("w_in_perm", (w, perm), lambda: w[perm])
        tensor([3., 1., 2.])
    """
    key = (kind, tuple(id(t) for t in tensors))
    stamp = (tuple((t.data_ptr(), t._version, tuple(t.shape), t.device) for t in tensors), extra)
    hit = _CACHE.get(key)
    # the entry must be for these very tensors: a freed tensor's id can be reused
    if (
        hit is not None
        and hit[0] == stamp
        and all(ref() is t for ref, t in zip(hit[1], tensors, strict=True))
    ):
        return hit[2]  # type: ignore[no-any-return]
    if any(t.is_cuda for t in tensors) and torch.cuda.is_current_stream_capturing():
        return UNSEEN  # type: ignore[no-any-return]
    value = build()
    refs = tuple(weakref.ref(t) for t in tensors)
    for t in tensors:  # the entry goes when any of its tensors does
        weakref.finalize(t, _drop, key, refs)
    _CACHE[key] = (stamp, refs, value)
    return value


def _drop(key: tuple[str, tuple[int, ...]], refs: tuple[weakref.ref[torch.Tensor], ...]) -> None:
    """Forget the entry of a freed tensor, unless a later entry (other tensors at those ids) took the key since."""
    hit = _CACHE.get(key)
    if hit is not None and hit[1] is refs:
        del _CACHE[key]


# (kind, device): the buffer handed out now. Every buffer ever handed out stays referenced (`_RETIRED`): a CUDA graph
# captured with one replays its address, so growing must never free one.
_TICKETS: dict[tuple[str, torch.device], torch.Tensor] = {}
_RETIRED: list[torch.Tensor] = []


def zeroed_tickets(kind: str, device: torch.device, n: int, at_least: int = 4096) -> torch.Tensor:
    """At least `n` zeroed int32 tickets of `kind` on `device` (at least `at_least`): the kernels that count on them
    leave them zeroed again, so later launches and CUDA-graph replays reuse them. Launches of one kind on one device
    share them, so two must not run at the same time on two streams.

    Example:
        >>> t = zeroed_tickets("example", torch.device("cpu"), 10, at_least=16)
        >>> t.shape, int(t.sum()), zeroed_tickets("example", torch.device("cpu"), 16) is t
        (torch.Size([16]), 0, True)
    """
    buf = _TICKETS.get((kind, device))
    if buf is None or buf.numel() < n:
        if buf is not None:
            _RETIRED.append(buf)
        buf = torch.zeros(max(n, at_least), dtype=torch.int32, device=device)
        _TICKETS[(kind, device)] = buf
    return buf
