"""The compile-time parameters of the mid-M GPTQ kernel (`gptq_cuda_mid.py`'s text) and its shared memory:
`MidSpec`, `mid_smem_bytes`."""

from __future__ import annotations

from dataclasses import dataclass

from fusegraph.runtime.kernels.gptq_cuda_small_spec import shape_error
from fusegraph.runtime.kernels.pdl import chain_error

__all__ = ["XS", "MidSpec", "mid_smem_bytes"]

XS = 68  # u32 words a staged row of x (64 + 4: the B-fragment loads hit 32 distinct banks)


@dataclass(frozen=True)
class MidSpec:
    """The compile-time parameters of one mid-M kernel instance.

    Attributes:
        bits: container bits, 4 or 8.
        bf16: x, scales and output are bf16 (4 bits only), else fp16.
        mt: n-tiles of 8 rows of x, 1..8 (M ≤ 8·mt).
        warps: warps per CTA = 64-column strips per CTA (1, 2, 4 or 8).
        split: CTAs along K per strip group (gridDim.y).
        cluster: split-K reduction through a thread-block cluster (2 ≤ split ≤ 8) instead of a ticket.
        has_perm: act-order (x gathered through perm).
        zero_v1: the qzeros store z − 1.
        min_blocks: `__launch_bounds__`'s minimum CTAs an SM (caps the registers).
        perm_ahead: act-order only: block u+1's x is gathered through perm into registers before block
            u's math and stored to shared memory after it (the gather's latency under the math), instead
            of gathered and stored before the math.
        bufs: register blocks of words a lane (1..4): 1 refills its one block half a block ahead; n ≥ 2
            requests block u + n − 1 whole before block u's math (n − 1 blocks in flight).
        pdl: launched with programmatic dependent launch after the kernel that writes x (no perm):
            the first blocks' words are requested before `griddepcontrol.wait`, x after it.
        l2pf: each warp first asks L2 for its strip's first `l2pf` blocks (one bulk prefetch each, Hopper;
            with pdl, before the wait), 0: no.
        chain: launched with programmatic dependent launch after whatever kernel comes before (the eager
            runtime's chain, `pdl.py`): each warp asks L2 for its strip's first `chain_l2` blocks, lets the
            kernel after it launch, and waits (`griddepcontrol.wait`) before anything else. Only prefetches
            come before the wait, and L2 is coherent, so no operand may be stale, whoever writes it.
        chain_l2: with chain, the blocks each warp asks L2 for before its wait (0..64).
        sfold: mt ≤ 2 only: the scale leaves the inner loop: a block's mmas take (q − z) (exact in fp16/bf16)
            into fp32 partial sums that are scaled once at the block's end (16·MT more registers a thread,
            one packed multiply a pair less).
    """

    bits: int
    bf16: bool
    mt: int
    warps: int
    split: int
    cluster: bool
    has_perm: bool
    zero_v1: bool
    min_blocks: int = 1
    perm_ahead: bool = False
    bufs: int = 1
    pdl: bool = False
    l2pf: int = 0
    sfold: bool = False
    chain: bool = False
    chain_l2: int = 0

    def __post_init__(self) -> None:
        if why := shape_error(self.bits, self.bf16, self.warps, self.split, self.cluster):
            raise ValueError(f"gptq_cuda_mid: {why}")
        if not 1 <= self.mt <= 8:
            raise ValueError(f"gptq_cuda_mid: mt must be 1..8, got {self.mt}")
        if not 1 <= self.bufs <= 4 or self.min_blocks < 1:
            raise ValueError(f"gptq_cuda_mid: bufs 1..4, min_blocks ≥ 1, got {self.bufs}, {self.min_blocks}")
        if (self.perm_ahead and not self.has_perm) or (self.pdl and self.has_perm):
            raise ValueError("gptq_cuda_mid: perm_ahead needs has_perm; pdl, no perm")
        if self.sfold and self.mt > 2:
            raise ValueError(
                f"gptq_cuda_mid: sfold needs mt <= 2 (its partial sums in registers), got mt={self.mt}"
            )
        if why := chain_error(self.chain, self.chain_l2, self.pdl):
            raise ValueError(f"gptq_cuda_mid: {why}")
        if not 0 <= self.l2pf <= 64:
            raise ValueError(f"gptq_cuda_mid: l2pf must be 0..64 blocks, got {self.l2pf}")


def mid_smem_bytes(spec: MidSpec, m: int) -> int:
    """Dynamic shared memory of one CTA: two staged blocks of x, or (after the loop) its [M][warps·64] sums."""
    return max(2 * 8 * spec.mt * XS * 4, m * spec.warps * 64 * 4)
