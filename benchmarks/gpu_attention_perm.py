"""What storing the attention's output through o_proj's act-order perm costs (`fg.attention.paged ... perm`).

`python benchmarks/gpu_attention_perm.py [--batch 1 16 64] [--ctx 2048]` (a CUDA machine) prints, per decode batch
(Llama-3-8B heads: 32 query heads, 8 kv heads, head dim 128, fp16, every sequence holding `ctx` cached tokens and adding
one), the CUDA-graph device time (`gpu.graph_us`, µs a call) of:
- `attn`: the paged attention alone (split keys + combine at these batches);
- `attn+perm`: the same, the last kernel storing each element at its permuted column (`perm_apart=False`);
- `attn,permute_rows`: the attention, then `gptq_cuda_permute.permute_rows` (the separate pass an act-order o_proj
  runs on its input past M = 1 without the fold);
- `attn,index_select`: the attention, then aten's `index_select` of the columns;
- `op`: the op's own pick (`SEPARATE_PERM_ROWS`: stored permuted below it, `permute_rows` after from it);
and `attn+perm` over `attn` and over `attn,permute_rows`. Each variant is checked equal to `attn` then gathered.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from gpu import graph_us  # noqa: E402

from fusegraph.runtime.kernels.gptq_cuda_permute import permute_rows  # noqa: E402
from fusegraph.runtime.kernels.paged_attention import paged_attention_triton  # noqa: E402

H, HKV, D, PAGE = 32, 8, 128, 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8, 16, 64])
    parser.add_argument("--ctx", type=int, default=2048)
    args = parser.parse_args()
    print(f"GPU: {torch.cuda.get_device_name()} | torch {torch.__version__} | ctx {args.ctx}")
    print(f"{'batch':>5} {'attn':>8} {'attn+perm':>10} {'attn,permute_rows':>18} {'attn,index_select':>18}"
          f" {'op':>8} {'perm/attn':>10} {'perm/rows':>10}")  # fmt: skip
    for bs in args.batch:
        row(bs, args.ctx)


def row(bs: int, ctx: int) -> None:
    """One batch's line."""
    pages = (ctx + 1 + PAGE - 1) // PAGE
    kv = torch.randn(bs * pages, 2, 1, PAGE, HKV, D, device="cuda", dtype=torch.float16)
    lut = torch.arange(bs * pages, device="cuda", dtype=torch.int32).reshape(bs, pages)
    ro = torch.arange(bs + 1, device="cuda", dtype=torch.int32)
    lens = torch.full((bs,), ctx, device="cuda", dtype=torch.int32)
    q = torch.randn(bs, H, D, device="cuda", dtype=torch.float16)
    perm = torch.randperm(H * D, device="cuda").to(torch.int32)

    def attn(p: torch.Tensor | None = None, apart: bool | None = False) -> torch.Tensor:
        return paged_attention_triton(q, ro, kv, lens, lut, 0, D**-0.5, None, p, perm_apart=apart)

    def then_rows() -> torch.Tensor | None:
        return permute_rows(attn().reshape(bs, H * D), perm)

    def then_select() -> torch.Tensor:
        return attn().reshape(bs, H * D).index_select(1, perm)

    want = then_select()
    for name, got in (
        ("attn+perm", attn(perm)),
        ("attn,permute_rows", then_rows()),
        ("op", attn(perm, None)),
    ):
        assert got is not None and torch.equal(got.reshape(bs, H * D), want), name
    times = [
        graph_us([fn]) for fn in (attn, lambda: attn(perm), then_rows, then_select, lambda: attn(perm, None))
    ]
    print(f"{bs:>5} {times[0]:>8.2f} {times[1]:>10.2f} {times[2]:>18.2f} {times[3]:>18.2f} {times[4]:>8.2f}"
          f" {times[1] / times[0]:>10.3f} {times[1] / times[2]:>10.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
