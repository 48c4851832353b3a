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
        pdl: launched with programmatic dependent launch after the kernel that writes x (after our own
            permutation of x, or in the chain with "early", `pdl.py`): the first blocks' words and zeros (int32)
            are requested before `griddepcontrol.wait`; the scales (a float weight) only of L2, and x (through
            perm with has_perm) and the scales are loaded after it. Not with perm_ahead (its gather comes first).
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
        cpa: 0 keeps the words in registers (`bufs`); n ≥ 2 streams each block through an n-stage shared-memory
            ring that cp.async fills: a stage holds x's block (the CTA's), each lane's own 16-byte words and each
            warp's scales and zeros, so n − 1 blocks are in flight during a block's math whatever the registers
            (bufs must be 1, perm_ahead off; with pdl the first stages' words are requested before the wait).
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
    cpa: int = 0

    def __post_init__(self) -> None:
        if why := shape_error(self.bits, self.bf16, self.warps, self.split, self.cluster):
            raise ValueError(f"gptq_cuda_mid: {why}")
        if not 1 <= self.mt <= 8:
            raise ValueError(f"gptq_cuda_mid: mt must be 1..8, got {self.mt}")
        if not 1 <= self.bufs <= 4 or self.min_blocks < 1:
            raise ValueError(f"gptq_cuda_mid: bufs 1..4, min_blocks ≥ 1, got {self.bufs}, {self.min_blocks}")
        if (self.perm_ahead and not self.has_perm) or (self.pdl and self.perm_ahead):
            raise ValueError("gptq_cuda_mid: perm_ahead needs has_perm, and not with pdl")
        if self.sfold and self.mt > 2:
            raise ValueError(
                f"gptq_cuda_mid: sfold needs mt <= 2 (its partial sums in registers), got mt={self.mt}"
            )
        if why := chain_error(self.chain, self.chain_l2, self.pdl):
            raise ValueError(f"gptq_cuda_mid: {why}")
        if self.cpa == 1 or not 0 <= self.cpa <= 16 or (self.cpa and (self.bufs != 1 or self.perm_ahead)):
            raise ValueError(
                f"gptq_cuda_mid: cpa must be 0 or a ring of 2..16 stages (with bufs 1, perm_ahead off), got "
                f"cpa={self.cpa}, bufs={self.bufs}, perm_ahead={self.perm_ahead}"
            )
        if not 0 <= self.l2pf <= 64:
            raise ValueError(f"gptq_cuda_mid: l2pf must be 0..64 blocks, got {self.l2pf}")


def mid_smem_bytes(spec: MidSpec, m: int, bps: int = 1) -> int:
    """Dynamic shared memory of one CTA of `bps` blocks a K slice: two staged blocks of x (with `cpa`, its stages
    in use, min(cpa, bps): x's block and each warp's words, scales and zeros), or after the loop its [M][warps·64]
    sums.

    Example:
        >>> mid_smem_bytes(MidSpec(4, False, 1, 2, 8, True, False, True, cpa=5), 1, bps=4)
        42752
    """
    if spec.cpa:
        stage = 8 * spec.mt * XS * 4 + spec.warps * (128 // (32 // spec.bits) * 256 + 128 + 8 * spec.bits)
        return max(min(spec.cpa, bps) * stage, m * spec.warps * 64 * 4)
    return max(2 * 8 * spec.mt * XS * 4, m * spec.warps * 64 * 4)
