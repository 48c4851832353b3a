"""What a CUDA graph's launch costs the device, by node count and node kind (a decode step is one graph).

`python benchmarks/gpu_graph_launch.py [--no-eager] [--n 64 448 ...]` (a CUDA machine; `--n` last) captures chains
of `n` tiny Triton kernels (each adds 1 to one element: under 1 µs a node) and replays each graph 50 times back to
back. For each chain it prints the µs a replay back to back and a node, the µs a replay synchronized (CUDA events
around each, as a generate loop that reads its token waits) and the host µs of one `replay()` call with the queue
empty (`cudaGraphLaunch`), the device's idle µs before the graph's first node (what the GPU waits between one replay
and the next) and its idle µs a step in all (`profile.span_times`, from `torch.profiler`). The chains are:
- `kernels`: kernel nodes only;
- `memset first` / `memset middle`: the same with one `cudaMemsetAsync` node (what "Memset" rows in a
  `CompiledGraph.profile` are) at the start / in the middle;
- `4 graphs` / `n/32 graphs`: the same kernels captured as 4 graphs, or graphs of 32 nodes, replayed in order (the
  device starts on the first while the host launches the rest);
- `eager`: the same launches without a graph (host-bound: the Python launch rate).
A decode step of Llama-3-8B shapes is a graph of about 340 nodes (`gpu_act_order_decode.py --profile`)."""

from __future__ import annotations

import ctypes
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import triton
import triton.language as tl

from fusegraph.runtime.profile import device_spans, span_times

REPLAYS = 50


@triton.jit
def _touch(x_ptr):
    tl.store(x_ptr, tl.load(x_ptr) + 1)


def memset_async(t: torch.Tensor) -> None:
    """Zero `t`'s bytes with one driver memset (`cuMemsetD8Async`, through the CUDA library torch loads) on torch's
    current stream: in a capture, one memset node (torch exposes no raw memset)."""
    from torch.cuda._utils import _check_cuda, _get_gpu_runtime_library

    fn = _get_gpu_runtime_library().cuMemsetD8Async
    fn.argtypes = [ctypes.c_uint64, ctypes.c_ubyte, ctypes.c_size_t, ctypes.c_void_p]
    _check_cuda(fn(t.data_ptr(), 0, t.numel() * t.element_size(), torch.cuda.current_stream().cuda_stream))


def chain(n: int, memset_at: int | None, x: torch.Tensor, pad: torch.Tensor) -> Callable[[], None]:
    """n launches of `_touch` on x, with one memset of `pad` before launch `memset_at`."""

    def step() -> None:
        for i in range(n):
            if i == memset_at:
                memset_async(pad)
            _touch[(1,)](x)

    return step


def measure(steps: list[Callable[[], None]], graph: bool) -> tuple[float, float, float, float, float]:
    """(µs a step back to back, µs a step synchronized, host µs a call with the queue empty, device idle µs
    before a step's first node, idle µs a step in all). A step runs `steps` in order, each its own graph
    when `graph`."""

    def run() -> None:
        for part in parts:
            part()

    parts = steps
    if graph:
        for step in steps:
            step()  # warm-up: compile
        torch.cuda.synchronize()
        graphs = [torch.cuda.CUDAGraph() for _ in steps]
        for g, step in zip(graphs, steps):
            with torch.cuda.graph(g):
                step()
        parts = [g.replay for g in graphs]
    for _ in range(3):
        run()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(REPLAYS):
        run()
    end.record()
    torch.cuda.synchronize()
    back_to_back = start.elapsed_time(end) * 1e3 / REPLAYS
    synced, launches = [], []
    for _ in range(REPLAYS):
        start.record()
        t0 = time.perf_counter()
        run()
        launches.append((time.perf_counter() - t0) * 1e6)
        end.record()
        end.synchronize()
        synced.append(start.elapsed_time(end) * 1e3)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            run()
        torch.cuda.synchronize()
    times = span_times(device_spans(prof))
    per_step = len(times) // 10
    gaps = [times[i * per_step][1] for i in range(1, 10)]  # the idle before the first node of replays 2..10
    median = REPLAYS // 2
    idle = sum(gap for _, gap, _ in times) / 10
    return back_to_back, sorted(synced)[median], sorted(launches)[median], sum(gaps) / len(gaps), idle


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("gpu_graph_launch.py needs a CUDA device")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    x = torch.zeros(1, device="cuda")
    pad = torch.zeros(4096, dtype=torch.uint8, device="cuda")
    print(
        f"{'n':>5} {'chain':>14} {'us a step':>10} {'us a node':>10} {'synced us':>10} {'launch us':>10}"
        f" {'idle before first':>18} {'idle a step':>12}"
    )
    sizes = [int(n) for n in sys.argv[sys.argv.index("--n") + 1 :]] if "--n" in sys.argv else [64, 448]
    # label, where the memset goes (a fraction of n; None: no memset), graphs a step (0: eager)
    chains: list[tuple[str, float | None, int]] = [
        ("kernels", None, 1),
        ("memset first", 0.0, 1),
        ("memset middle", 0.5, 1),
        ("4 graphs", None, 4),
        ("n/32 graphs", None, -32),
    ]
    if "--no-eager" not in sys.argv:
        chains.append(("eager", None, 0))
    for n in sizes:
        for label, memset_fraction, graphs in chains:
            memset_at = None if memset_fraction is None else int(n * memset_fraction)
            count = max(1, graphs if graphs >= 0 else n // -graphs)
            steps = [chain(n // count, memset_at if i == 0 else None, x, pad) for i in range(count)]
            per_step, synced, launch, first, idle = measure(steps, graphs != 0)
            print(
                f"{n:>5} {label:>14} {per_step:10.1f} {per_step / n:10.3f} {synced:10.1f} {launch:10.1f}"
                f" {first:18.1f} {idle:12.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
