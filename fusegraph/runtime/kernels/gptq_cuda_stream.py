"""CUDA C++ source of the warp-specialized stream-K small-M GPTQ kernel (`gptq_cuda.py` compiles it with NVRTC).

`fg_gptq_stream`: x `[M ≤ 16, K]` (fp16, or bf16 at 4 bits) times W in `fg.gptq.repack`'s layout
(`gptq_tiled.py`'s docstring: a 64-column strip's 128-row block is one contiguous run of R word rows of
256 bytes). A persistent grid of CTAS CTAs (a few an SM) splits the (strip, block) units, strip-major,
into equal runs (CTA c takes units ⌊c·T/CTAS⌋ .. ⌊(c+1)·T/CTAS⌋): every SM streams the same bytes.

- One producer warp streams each unit (its R word rows, its group's 64 scales and packed zeros, and
  x's M rows of that block) into an S-stage shared-memory ring by bulk copies (TMA, mbarrier
  complete_tx): the word rows padded to 288 bytes (one copy each, PAD) or as one copy (no padding).
- NC consumer warps take the units in turn (unit j: warp j mod NC): wait for its stage, read the words,
  scales, zeros and x fragments into registers, free the stage at once, then dequantize (magic numbers,
  `gptq_cuda_ptx.dequant`) and multiply with `mma.m16n8k16` (W^T as A, x^T as B; the small-M kernel's
  fragments), each block's fp32 sums times its scales into the accumulators.
- A run covers whole strips and at most two partial ones. At the end of each strip of its run the
  consumers sum their warps in shared memory; a whole strip is stored; a partial one goes to the CTA's
  slot of a workspace, and the CTA that completes the strip's units (atomic ticket) sums the slots of
  the strip's CTAs in CTA order (deterministic) and stores it. Or (CL) clusters of CL CTAs take whole
  strips each, and after one cluster barrier the CTA holding a partial strip's first unit sums the
  cluster's slots of it in rank order through distributed shared memory.
PROBE = 1 times the ring alone (the consumers read one word of each stage; the result is wrong by design).
"""

from __future__ import annotations

from dataclasses import dataclass

from fusegraph.runtime.kernels.gptq_cuda_ptx import HELPERS
from fusegraph.runtime.kernels.gptq_cuda_stream_src import STREAM_SOURCE

__all__ = ["STREAM_DEFAULT", "STREAM_KERNEL_NAME", "STREAM_PLAN", "StreamSpec", "stream_grid", "stream_kernel_source",
           "stream_plan", "stream_smem_bytes"]  # fmt: skip

STREAM_KERNEL_NAME = "fg_gptq_stream"
# The default dispatch (`gptq_plan.cuda_plan`, sm_90, no config) runs it on these (bits, lowest M, highest M), where
# it was measured faster than the small-M and mid-M kernels on all four Llama-3-8B shapes (H200; docs/benchmarks.md,
# "fifth session: small M"); act-order there too, x permuted first. Empty: nowhere.
STREAM_DEFAULT: tuple[tuple[int, int, int], ...] = ()
STREAM_PLAN: dict[str, int | bool] = {"consumers": 8, "stages": 16, "ctas": 1, "pad": True, "cl": 0, "cpa": True,
                                      "producers": 2}  # fmt: skip


@dataclass(frozen=True)
class StreamSpec:
    """The compile-time parameters of one stream-K kernel instance.

    Attributes:
        bits: container bits, 4 or 8.
        bf16: x, scales and output are bf16 (4 bits only), else fp16.
        mt: n-tiles of 8 rows of x: 1 (M ≤ 8) or 2 (M ≤ 16).
        consumers: consumer warps a CTA (1..12); one more warp produces.
        stages: the ring's stages (2..16, a multiple of `consumers`), one unit each.
        pad: the word rows land 288 bytes apart (one bulk copy each: conflict-free reads), else as one copy.
        zero_v1: the qzeros store z − 1.
        probe: 1: the ring alone (timing only).
        min_blocks: `__launch_bounds__`'s minimum CTAs an SM (caps the registers).
        cl: 0: the grid splits all units and partial strips are summed by atomic ticket through global
            memory; 2, 4 or 8: clusters of `cl` CTAs each take whole strips (the launch gives every cluster
            the same number where it can) and sum their partial strips through distributed shared memory.
        pdl: launched with programmatic dependent launch after the kernel that writes x: the producer
            streams the first `stages` units' words, scales and zeros, then `griddepcontrol.wait`, then x.
        cpa: the producers copy 16 bytes a lane by `cp.async` (arrivals by `cp.async.mbarrier.arrive.noinc`,
            word rows padded) instead of bulk copies (run B, H200: one SM's bulk copies streamed ~5 GB/s).
        producers: producer warps (1, 2 or 4; `cpa` only): warp NC + p takes the units j ≡ p (mod producers).
        direct: no producers and no ring: each consumer warp loads its next unit (words, scales, zeros, x's
            fragments) into registers while it computes this one (the small-M kernel's loads, stream-K's split).
    """

    bits: int
    bf16: bool
    mt: int
    consumers: int
    stages: int
    pad: bool = True
    zero_v1: bool = True
    probe: int = 0
    min_blocks: int = 1
    cl: int = 0
    pdl: bool = False
    cpa: bool = False
    producers: int = 1
    direct: bool = False

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise ValueError(f"gptq_cuda_stream: bits must be 4 or 8, got {self.bits}")
        if self.bf16 and self.bits == 8:
            raise ValueError("gptq_cuda_stream: bf16 needs bits=4 (bf16 cannot hold 128 + 255 exactly)")
        if self.mt not in (1, 2):
            raise ValueError(f"gptq_cuda_stream: mt must be 1 or 2, got {self.mt}")
        if not 1 <= self.consumers <= 12 or not 2 <= self.stages <= 16 or self.stages % self.consumers:
            raise ValueError(
                "gptq_cuda_stream: consumers must be 1..12 and stages 2..16 a multiple of consumers (a stage's "
                f"units all go to one warp: its mbarrier phases stay in order), got {self.consumers}, {self.stages}"
            )
        if (
            self.producers not in (1, 2, 4)
            or (self.producers > 1 and not self.cpa)
            or self.stages % self.producers
        ):
            raise ValueError(
                f"gptq_cuda_stream: producers must be 1, 2 or 4 (> 1 with cpa), dividing stages, got {self.producers}"
            )
        if self.cl not in (0, 2, 4, 8):
            raise ValueError(f"gptq_cuda_stream: cl must be 0, 2, 4 or 8, got {self.cl}")
        if self.probe not in (0, 1) or self.min_blocks not in (1, 2, 3, 4):
            raise ValueError(
                f"gptq_cuda_stream: probe must be 0 or 1, min_blocks 1..4, got {self.probe}, {self.min_blocks}"
            )


def _stage_bytes(spec: StreamSpec) -> int:
    rows = 128 * spec.bits // 32
    return (rows * (288 if spec.pad or spec.cpa else 256) + 192 + 8 * spec.mt * 272 + 127) // 128 * 128


def stream_smem_bytes(spec: StreamSpec, m: int) -> int:
    """Dynamic shared memory of one CTA: the ring, its 2·S mbarriers, the consumers' sums [NC][M][64] fp32.

    Example:
        >>> stream_smem_bytes(StreamSpec(4, False, 1, 8, 8), 1)
        58512
    """
    sums = (spec.consumers + (2 if spec.cl else 0)) * m * 64 * 4
    return (0 if spec.direct else spec.stages * _stage_bytes(spec)) + 16 * spec.stages + 16 + sums


def stream_plan(m: int, n: int, k: int, bits: int, *, bf16: bool = False, cap: tuple[int, int] | None = None,
                default: bool = False) -> dict[str, int | bool] | None:  # fmt: skip
    """The stream-K kernel's launch plan ({"stream": True} and `STREAM_PLAN`), or None where it cannot run
    (M outside 1..16, a shape off the repacked layout, bits other than 4 and 8, bf16 at 8 bits, before sm_90)
    or, with `default`, where `STREAM_DEFAULT` does not take it. Fewer stages where the ring would pass 200 KB.

    Example:
        >>> stream_plan(1, 6144, 4096, 4, cap=(9, 0))["stages"]
        16
    """
    if (cap is not None and cap < (9, 0)) or not 1 <= m <= 16 or n % 64 or k % 128:
        return None
    if bits not in (4, 8) or (bf16 and bits == 8):
        return None
    if default and not any(b == bits and lo <= m <= hi for b, lo, hi in STREAM_DEFAULT):
        return None
    plan = {"stream": True} | STREAM_PLAN
    nc, ctas = int(plan["consumers"]), int(plan["ctas"])
    while int(plan["stages"]) > max(
        nc, int(plan["producers"])
    ):  # fewer stages where the ring would not fit (8-bit, M > 8)
        spec = StreamSpec(bits, bf16, 1 if m <= 8 else 2, nc, int(plan["stages"]), bool(plan["pad"]), cl=int(plan["cl"]),
                          cpa=bool(plan["cpa"]), producers=int(plan["producers"]))  # fmt: skip
        if stream_smem_bytes(spec, m) * ctas <= 200 * 1024:
            break
        plan["stages"] = int(plan["stages"]) - nc
    return plan


def stream_grid(spec: StreamSpec, n: int, k: int, ctas: int) -> int:
    """The CTAs of one launch for `ctas` wanted (at most one a (strip, block) unit); with clusters, as many as
    keep the most strips a cluster takes lowest (a multiple of `spec.cl`).

    Example:
        >>> stream_grid(StreamSpec(4, False, 1, 8, 8, cl=4), 6144, 4096, 132)  # qkv: 32 clusters of 3 strips
        128
    """
    strips = n // 64
    grid = min(ctas, strips * (k // 128))
    if spec.cl:
        most = -(-strips // max(1, grid // spec.cl))
        grid = -(-strips // most) * spec.cl
    return grid


def stream_kernel_source(spec: StreamSpec) -> str:
    """The CUDA C++ text of `fg_gptq_stream` for `spec` (no headers: NVRTC needs no include path).

    Example:
        >>> "fg_gptq_stream" in stream_kernel_source(StreamSpec(4, False, 1, 8, 8))
        True
    """
    return STREAM_SOURCE % {
        "bits": spec.bits,
        "bf16": int(spec.bf16),
        "mt": spec.mt,
        "consumers": spec.consumers,
        "stages": spec.stages,
        "pad": int(spec.pad),
        "zero_v1": int(spec.zero_v1),
        "probe": spec.probe,
        "min_blocks": spec.min_blocks,
        "cl": spec.cl,
        "pdl": int(spec.pdl),
        "cpa": int(spec.cpa),
        "producers": spec.producers,
        "direct": int(spec.direct),
        "stage_b": _stage_bytes(spec),
        "helpers": HELPERS,
    }
