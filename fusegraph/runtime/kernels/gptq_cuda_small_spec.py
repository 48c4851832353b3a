"""The compile-time parameters of the small-M GPTQ kernel (`gptq_cuda_src.py`'s text) and its shared memory:
`KernelSpec`, `smem_bytes` (re-exported by `gptq_cuda_src`)."""

from __future__ import annotations

from dataclasses import dataclass

from fusegraph.runtime.kernels.pdl import chain_error

__all__ = ["KernelSpec", "shape_error", "smem_bytes"]


def shape_error(bits: int, bf16: bool, warps: int, split: int, cluster: bool) -> str | None:
    """Why the fields both the small-M and the mid-M kernel specs have are wrong, or None (each spec's
    `__post_init__` raises the reason, its kernel named).

    Example:
        >>> shape_error(8, True, 4, 2, False)
        'bf16 needs bits=4 (bf16 cannot hold 128 + 255 exactly)'
    """
    if bits not in (4, 8):
        return f"bits must be 4 or 8, got {bits}"
    if bf16 and bits == 8:
        return "bf16 needs bits=4 (bf16 cannot hold 128 + 255 exactly)"
    if warps not in (1, 2, 4, 8) or split < 1:
        return f"warps must be 1, 2, 4 or 8 and split ≥ 1, got {warps}, {split}"
    if cluster and not 2 <= split <= 8:
        return f"cluster needs 2 ≤ split ≤ 8, got {split}"
    return None


@dataclass(frozen=True)
class KernelSpec:
    """The compile-time parameters of one kernel instance.

    Attributes:
        bits: container bits, 4 or 8.
        bf16: x, scales and output are bf16 (4 bits only), else fp16.
        mt: n-tiles of 8 rows of x: 1 (M ≤ 8) or 2 (M ≤ 16).
        warps: warps per CTA.
        split: CTAs along K per strip (gridDim.y).
        cluster: split-K reduction through a thread-block cluster (split ≤ 8) instead of a ticket.
        has_perm: act-order (x gathered through perm).
        zero_v1: the qzeros store z − 1.
        min_blocks: `__launch_bounds__`'s minimum CTAs an SM (caps the registers).
        l2pf: also ask L2 for each warp's block this many blocks ahead (one bulk prefetch, Hopper), 0: no.
        tma: 0 loads the words into registers; n ≥ 2 streams them through an n-stage shared-memory
            ring per warp filled by bulk copies (TMA, one per 256-byte word row, mbarrier completion).
        perm_ahead: act-order only: x's slice gathered column-chunk major, loads ahead (`gather_x`).
        bufs: register buffers of words a warp (2..4): bufs − 1 blocks in flight while one is used.
        pdl: launched with programmatic dependent launch after the kernel that writes x (after our own
            permutation of x, or the chain's "early", `pdl.py`): the first blocks' words and zeros (int32) are
            requested before `griddepcontrol.wait`, their scales asked of L2; x (gathered through perm with
            has_perm) and the scales after it, then the kernel after it may launch.
        xfull: act-order: all of x's rows and the slice's perm are copied to shared memory first (with the
            first words in flight), and the slice is gathered from there, not from global memory.
        chain: launched with programmatic dependent launch after whatever kernel comes before (the eager
            runtime's chain, `pdl.py`): each warp asks L2 for its first `chain_l2` blocks, lets the kernel after
            it launch, and waits (`griddepcontrol.wait`) before anything else. Only prefetches come before the
            wait, and L2 is coherent, so no operand may be stale, whoever writes it.
        chain_l2: with chain, the blocks each warp asks L2 for before its wait (0..64).
        fold: fp16: the mma takes the raw magic-number pairs (1024 + q; 4-bit odd pairs 1024 + 16q times
            x/16) and each block's sums lose (1024 + z)·Σx after (`FOLD_SUMS`): 4 instructions fewer a word.
        cpa: 0 keeps the words in registers (`bufs`); n ≥ 2 streams each warp's blocks through its own n-stage
            shared-memory ring that cp.async fills (each lane's 16-byte words, the warp's scales and zeros), so
            n − 1 blocks a warp are in flight during a block's math whatever the registers (tma, xfull and fold
            off, bufs 2; x is staged by plain loads after the first stages are requested).
    """

    bits: int
    bf16: bool
    mt: int
    warps: int
    split: int
    cluster: bool
    has_perm: bool
    zero_v1: bool
    min_blocks: int = 4
    l2pf: int = 0
    tma: int = 0
    perm_ahead: bool = False
    bufs: int = 2
    pdl: bool = False
    xfull: bool = False
    fold: bool = False
    chain: bool = False
    chain_l2: int = 0
    cpa: int = 0

    def __post_init__(self) -> None:
        if why := shape_error(self.bits, self.bf16, self.warps, self.split, self.cluster):
            raise ValueError(f"gptq_cuda: {why}")
        if self.mt not in (1, 2):
            raise ValueError(f"gptq_cuda: mt must be 1 or 2, got {self.mt}")
        if self.tma == 1 or self.tma < 0:
            raise ValueError(f"gptq_cuda: tma must be 0 or a ring of ≥ 2 stages, got {self.tma}")
        if not 2 <= self.bufs <= 4 or (self.tma and self.bufs != 2):
            raise ValueError(f"gptq_cuda: bufs must be 2..4 (2 with tma), got {self.bufs}")
        if self.perm_ahead and not self.has_perm:
            raise ValueError("gptq_cuda: perm_ahead needs has_perm (it changes the act-order gather)")
        if self.pdl and self.tma:
            raise ValueError("gptq_cuda: pdl needs tma off (its ring's first copies carry the scales)")
        if why := chain_error(self.chain, self.chain_l2, self.pdl):
            raise ValueError(f"gptq_cuda: {why}")
        if self.xfull and (not self.has_perm or self.perm_ahead or self.tma):
            raise ValueError("gptq_cuda: xfull needs has_perm, and perm_ahead and tma off")
        if self.cpa == 1 or not 0 <= self.cpa <= 16 or (self.cpa and (self.tma or self.xfull or self.fold)):
            raise ValueError(
                f"gptq_cuda: cpa must be 0 or a ring of 2..16 stages (tma, xfull, fold off), got {self.cpa}"
            )
        if self.cpa and self.bufs != 2:
            raise ValueError(
                f"gptq_cuda: cpa keeps one block in registers (bufs 2, the default), got bufs={self.bufs}"
            )
        if self.fold and (self.bf16 or self.tma):
            raise ValueError("gptq_cuda: fold needs fp16 and tma off")


def smem_bytes(spec: KernelSpec, m: int, bps: int) -> int:
    """Dynamic shared memory of one CTA: its warps' partial sums, x's slice (m rows, padded), the CTA's sums, and a
    ring per warp (`tma`'s stages and mbarriers, or `cpa`'s stages in use: min(cpa, the warp's blocks))."""
    rows = 128 // (32 // spec.bits)
    ring = spec.warps * spec.tma * (rows * 288 + 128 + 8 * spec.bits + 8)  # stages + their mbarriers
    if spec.cpa:
        ring = spec.warps * min(spec.cpa, -(-bps // spec.warps)) * (rows * 256 + 128 + 8 * spec.bits)
    full = m * bps * spec.split * 256 + bps * 512 if spec.xfull else 0  # x's M × K, the slice's perm
    return spec.warps * m * 64 * 4 + m * (bps * 64 + 4) * 4 + m * 64 * 4 + ring + full
