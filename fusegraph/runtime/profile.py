"""Where a step's time goes: host overhead per call and device time per kernel (or CPU op).

`profile_steps(model, inputs)` runs the step a few times to warm up, then measures:
- host: the time a call takes to return (Python, checks, launches; no sync inside);
- wall: the time per step when the device is kept busy (synchronized once at the end);
- device: per kernel (CUDA) or per aten op (CPU), from `torch.profiler`, per step;
- idle (CUDA): per kernel, the time the device sat idle right before it started (its start
  minus the latest end of the kernels that started before it; an overlap, as under
  programmatic dependent launch, counts 0), per step. Wall minus device time says how much
  idle a step has; this says which kernels wait on it. The first profiled step starts on an
  idle device, so its wait for the host's launch (a CUDA graph's `cudaGraphLaunch`: hundreds
  of µs under the profiler) shows, divided by `steps`, as idle before the step's first kernel.
- advance (CUDA): per kernel, the time by which it moved the latest end of the kernels before
  it, per step (`advance`). Under PDL kernels overlap and their own times sum past the step;
  the advances do not: with the idle they sum to the time from the first start to the last end.

The same inputs run every time, so a step that writes the KV cache rewrites the same slots.

Example:
    >>> report = model.profile(x, row_offsets, kv_blocks, cache_lengths, lookup_table)
    >>> print(report)
    profile of 'attn' on cuda (pipeline ..., cuda_graphs=True), 20 steps
      host 41.2 us/call, wall 123.0 us/step, device 119.8 us/step in 9 kernels, idle 6.1 us/step between them,
      114.9 us/step on the path
         us/step  calls/step  idle before     advance  name
            61.0         2.0          1.3        58.7  _gptq_gemv_kernel
    ...
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

__all__ = ["ProfileReport", "advance", "device_spans", "idle_before", "profile_steps", "span_times"]

_ROWS = 30  # rows printed; the rest are summed in one line


@dataclass
class ProfileReport:
    """Per-step timings of a compiled model; `str()` is the table `fusegraph run --profile` prints."""

    title: str
    steps: int
    host_us: float
    wall_us: float
    device: str
    ops: list[tuple[str, float, float]] = field(default_factory=list)  # name, us/step, calls/step
    idle: dict[str, float] = field(default_factory=dict)  # name: device idle us/step before it
    advance: dict[str, float] = field(default_factory=dict)  # name: us/step it moved the device's latest end

    @property
    def idle_us(self) -> float:
        """Total device idle time per step between kernels (CUDA; 0 on the CPU)."""
        return sum(self.idle.values())

    @property
    def device_us(self) -> float:
        """Total device (CUDA) or CPU-op time per step."""
        return sum(us for _, us, _ in self.ops)

    def __str__(self) -> str:
        unit = "kernels" if self.device == "cuda" else "CPU ops"
        lines = [
            f"{self.title}, {self.steps} steps",
            f"  host {self.host_us:.1f} us/call, wall {self.wall_us:.1f} us/step, "
            f"{'device' if self.device == 'cuda' else 'cpu'} {self.device_us:.1f} us/step in {len(self.ops)} {unit}"
            + (f", idle {self.idle_us:.1f} us/step between them" if self.idle else "")
            + (f", {sum(self.advance.values()):.1f} us/step on the path" if self.advance else ""),
            f"    {'us/step':>10}  {'calls/step':>10}  "
            + ("idle before  " if self.idle else "")
            + ("   advance  " if self.advance else "")
            + "name",
        ]
        lines += [
            f"    {us:10.1f}  {calls:10.1f}  "
            + (f"{self.idle.get(name, 0.0):11.1f}  " if self.idle else "")
            + (f"{self.advance.get(name, 0.0):10.1f}  " if self.advance else "")
            + name
            for name, us, calls in self.ops[:_ROWS]
        ]
        if len(self.ops) > _ROWS:
            rest = sum(us for _, us, _ in self.ops[_ROWS:])
            lines.append(f"    {rest:10.1f}  {'':>10}  ({len(self.ops) - _ROWS} more)")
        return "\n".join(lines)


def profile_steps(
    step: Callable[[], object], device: str, title: str, steps: int = 20, warmup: int = 3
) -> ProfileReport:
    """Time `step()` (one model call) `steps` times after `warmup` calls; see the module doc.

    Raises:
        ValueError: `steps` or `warmup` is not a positive / non-negative int.
    """
    if not isinstance(steps, int) or steps < 1 or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(
            f"profile: steps must be >= 1 and warmup >= 0, got steps={steps!r}, warmup={warmup!r}"
        )
    on_cuda = torch.device(device).type == "cuda"

    def sync() -> None:
        if on_cuda:
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    host = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        host += time.perf_counter() - t0
    sync()
    wall = time.perf_counter() - start
    activities = [torch.profiler.ProfilerActivity.CPU]
    if on_cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync()
    kind = "cuda" if on_cuda else "cpu"
    idle, moved = {}, {}
    if on_cuda:
        times = span_times(device_spans(prof))
        idle = {name: us / steps for name, us in _by_name(times, 1).items()}
        moved = {name: us / steps for name, us in _by_name(times, 2).items()}
    return ProfileReport(
        title, steps, host / steps * 1e6, wall / steps * 1e6, kind, _ops(prof, on_cuda, steps), idle, moved
    )


def device_spans(prof: torch.profiler.profile) -> list[tuple[str, float, float]]:
    """(name, start µs, end µs) of each CUDA kernel, copy or memset a profile recorded, by start."""
    spans = [
        (e.name, e.time_range.start, e.time_range.end)
        for e in prof.events()  # type: ignore[no-untyped-call]
        if e.device_type == torch.profiler.DeviceType.CUDA
    ]
    return sorted(spans, key=lambda span: span[1])


def idle_before(spans: list[tuple[str, float, float]]) -> dict[str, float]:
    """{name: summed idle time right before its spans} of (name, start, end) device spans.

    A span's idle is its start minus the latest end among the spans that started before it, or 0
    when they still run (an overlap); the first span has none. The sum over names is the time
    between the first start and the last end when no span was running.

    Example:
        >>> idle_before([("a", 0.0, 2.0), ("b", 3.0, 5.0), ("a", 4.5, 6.0), ("b", 8.0, 9.0)])
        {'a': 0.0, 'b': 3.0}
    """
    return _by_name(span_times(spans), 1)


def advance(spans: list[tuple[str, float, float]]) -> dict[str, float]:
    """{name: summed time by which its spans moved the device's latest end} of (name, start, end) spans.

    A span's advance is its end minus the later of its start and the latest end among the spans that
    started before it, or 0 when it ends before them. Under programmatic dependent launch a kernel
    starts while the one before runs, so its own span counts that kernel's tail too; its advance
    counts only what it added. The advances and the idle (`idle_before`) sum to the time from the
    first start to the last end: a step's device time, split between its kernels without overlap.

    Example:
        >>> advance([("norm", 0.0, 2.0), ("gemv", 1.0, 5.0), ("norm", 6.0, 7.0), ("gemv", 6.5, 6.8)])
        {'norm': 3.0, 'gemv': 3.0}
    """
    return _by_name(span_times(spans), 2)


def span_times(spans: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """(name, idle before, advance) of each (name, start, end) span, in order of start (see `idle_before` and
    `advance`).

    Example:
        >>> span_times([("b", 3.0, 5.0), ("a", 0.0, 4.0)])
        [('a', 0.0, 4.0), ('b', 0.0, 1.0)]
    """
    times = []
    busy_until: float | None = None
    for name, start, end in sorted(spans, key=lambda span: span[1]):
        ahead = start if busy_until is None else max(start, busy_until)  # where this span starts to add
        times.append((name, 0.0 if busy_until is None else ahead - busy_until, max(0.0, end - ahead)))
        busy_until = end if busy_until is None else max(busy_until, end)
    return times


def _by_name(times: list[tuple[str, float, float]], column: int) -> dict[str, float]:
    """{name: the sum of a `span_times` column (1 idle, 2 advance) over its spans}."""
    out: dict[str, float] = {}
    for name, idle, moved in times:
        out[name] = out.get(name, 0.0) + (idle if column == 1 else moved)
    return out


def _ops(prof: torch.profiler.profile, on_cuda: bool, steps: int) -> list[tuple[str, float, float]]:
    """(name, us per step, calls per step), most expensive first: CUDA kernels, or top-level
    aten ops on the CPU (self time, so nested ops are not counted twice)."""
    rows = []
    for e in prof.key_averages():
        if on_cuda:
            if e.device_type != torch.profiler.DeviceType.CUDA:
                continue
            us = _device_time(e)
        else:
            if not e.key.startswith("aten::"):
                continue
            us = e.self_cpu_time_total
        if us > 0:
            rows.append((e.key, us / steps, e.count / steps))
    return sorted(rows, key=lambda r: -r[1])


def _device_time(e: object) -> float:
    for name in ("self_device_time_total", "self_cuda_time_total", "device_time_total"):
        if (value := getattr(e, name, None)) is not None:
            return float(value)
    return 0.0
