"""The CUDA eager runtime's device metadata check (`kernels/write_flag.py`) on one GPU.

`python benchmarks/write_check.py` on a CUDA machine. One launch checks a step's row offsets,
rope positions, pages and shared blocks (`runtime/write_guard.py`); it runs first in every
step, so its time adds to every decode step. Printed per shape: do_bench of one call (launch
included) with the page and row-offset checks only, and with all checks; and the device time
per launch of 20 launches replayed in one CUDA graph (how the runtime runs it under
`cuda_graphs=True`). A last line checks that a shared block is refused with the right words.
"""

# ruff: noqa: B023 - the closures run inside their loop iteration
from __future__ import annotations

import torch
import triton.testing

from fusegraph.runtime.kernels.write_flag import check_capacity_on_device

SHAPES = [  # name, batch, new tokens per sequence, cached tokens, page size, lookup pages
    ("decode bs256 ctx2048", 256, 1, 2000, 16, 128),
    ("decode bs32 ctx2048", 32, 1, 2000, 16, 128),
    ("prefill 8x512", 8, 512, 0, 16, 128),
]


def main() -> None:
    dev = "cuda"
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    for name, batch, new, cached, page_size, max_pages in SHAPES:
        tokens = torch.full((batch,), new)
        ro = torch.cat([torch.zeros(1, dtype=torch.int64), tokens.cumsum(0)]).to(torch.uint32).to(dev)
        lens = torch.full((batch,), cached, dtype=torch.uint32, device=dev)
        lut = torch.arange(batch * max_pages).reshape(batch, max_pages).to(torch.uint32).to(dev)
        num_blocks, rows = batch * max_pages, batch * new
        flag = torch.zeros(8, dtype=torch.int64, device=dev)
        owners = torch.zeros(num_blocks, dtype=torch.int32, device=dev)

        def pages() -> None:
            check_capacity_on_device(flag, ro, lens, lut, rows, num_blocks, page_size, 0)

        def every() -> None:
            check_capacity_on_device(
                flag, ro, lens, lut, rows, num_blocks, page_size, 0, owners=owners, max_pos=8192
            )

        pages()
        every()
        torch.cuda.synchronize()
        assert int(flag[0]) == 0, f"{name}: a valid step was refused: {flag.tolist()}"
        t_pages = triton.testing.do_bench(pages, warmup=20, rep=100) * 1e3
        t_every = triton.testing.do_bench(every, warmup=20, rep=100) * 1e3
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(20):
                every()
        graph.replay()
        torch.cuda.synchronize()
        t_graph = triton.testing.do_bench(graph.replay, warmup=5, rep=50) * 1e3 / 20
        print(
            f"{name}: pages+offsets {t_pages:.1f} us, all checks {t_every:.1f} us (do_bench, per call); "
            f"all checks in a CUDA graph {t_graph:.1f} us per launch"
        )
    lut[1, 5] = lut[0, 3]  # (the prefill shape) sequence 1 writes sequence 0's block 3
    every()
    torch.cuda.synchronize()
    want = [4, 1, 0, 3, -1, num_blocks, page_size, 0]
    print(f"shared block words: {flag.tolist()} ({'OK' if flag.tolist() == want else f'FAIL, want {want}'})")


if __name__ == "__main__":
    main()
