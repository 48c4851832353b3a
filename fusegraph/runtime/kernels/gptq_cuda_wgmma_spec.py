"""The compile-time parameters of the warp-specialized RS-wgmma GPTQ kernel (`gptq_cuda_wgmma_ws_src.py`'s
text) and its shared-memory layout: `RswgSpec`, the bytes of a ring stage and of a CTA."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["META", "RswgSpec", "rswg_smem_bytes", "rswg_stage_bytes"]

META = 256  # bytes a stage gives one strip's scales (128) and zero words (32 or 64), rounded up


@dataclass(frozen=True)
class RswgSpec:
    """The compile-time parameters of one warp-specialized kernel instance (plain 4- or 8-bit).

    Attributes:
        bf16: x, scales and output are bf16, else fp16.
        tok: rows of x a CTA takes, the wgmma's N: a multiple of 8, 8..256.
        split: CTAs along K per tile (gridDim.z); > 1 reduces through a cluster (≤ 8).
        zero_v1: the qzeros store z − 1.
        stages: depth of the shared-memory ring, 2..8.
        ncw: consumer warpgroups (64-column strips) a CTA, 1..3 (3: qkv's 96 strips in 32 column tiles, one
            round of 128 CTAs where 2 strips give 48 tiles; 4 was slower on every shape, so not offered).
        minb: CTAs an SM (`__launch_bounds__`), 1 or 2: sets the registers a thread (tok/2 accumulators
            and about 40 more, 48 at minb=2, must fit) and what `setmaxnreg` shares out.
        vred: the split-K sum reads 4 floats a remote load and stores 4 outputs at once.
        sk: stream-K (split must be 1): a grid of resident CTAs, each taking an equal run of the
            (tile, block) pairs; a tile split between CTAs is summed by the last to finish (a ticket).
        tma: x's blocks are loaded by the copy engine (`cp.async.bulk.tensor`, a tensor map with the
            128-byte swizzle) instead of 16-byte cp.asyncs of 128 threads.
        bits: 4 or 8 (fp16 only): a strip's 128-row block is 16 or 32 word rows (4 or 8 KB).
        pdl: 0, or P ≥ 1: launched as a programmatic dependent launch: the producer asks L2 for the
            first P·STAGES weight blocks of each of its strips, then waits (`griddepcontrol.wait`) for the
            kernel before it, then reads x.
        mc: x multicast: a cluster of the 2 CTAs of column tiles 2j, 2j + 1 (same rows of x), each loading
            half of x's block into both (`.multicast::cluster`); their consumers free a stage in both CTAs.
        sred: the split-K sum by bands: CTA r of the cluster owns rows [r·RS, (r + 1)·RS) of the tile
            and the others store their fragments of them into its ring by `st.async` (no staging).
        infl: a consumer's 16-row steps in flight, 2, 4 or 8: its wgmma groups outstanding and its register sets
            of A, so the dequantization of a step runs under the wgmmas of the INFL − 1 before it.
        ostage: split 1 (not stream-K): the outputs staged in shared memory and stored a row at a time by 16-byte
            stores, not 2-byte stores from the accumulator fragments.
        probe: for benchmarks only (the results are wrong): 1 skips the dequantization, 2 the loads of x,
            3 the wgmmas, 4 the loads of the words, 5 every block (what is left: launch, prologue, epilogue), 6 every
            block and the epilogue (launch and prologue); 0 (default) none.
    """

    bf16: bool
    tok: int
    split: int
    zero_v1: bool
    stages: int = 3
    ncw: int = 2
    minb: int = 1
    vred: bool = False
    sk: bool = False
    probe: int = 0
    tma: bool = False
    bits: int = 4
    pdl: int = 0
    sred: bool = False
    mc: bool = False
    infl: int = 2
    ostage: bool = False

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise ValueError(f"gptq_cuda_wgmma: bits must be 4 or 8, got {self.bits}")
        if self.bits == 8 and self.bf16:
            raise ValueError("gptq_cuda_wgmma: bits=8 needs fp16 (bf16 cannot hold 128 + 255 exactly)")
        if self.tok % 8 or not 8 <= self.tok <= 256:
            raise ValueError(f"gptq_cuda_wgmma: tok must be a multiple of 8 in 8..256, got {self.tok}")
        if not 1 <= self.split <= 8:
            raise ValueError(f"gptq_cuda_wgmma: split must be 1..8 (a cluster), got {self.split}")
        if not 0 <= self.pdl <= 64:
            raise ValueError(
                f"gptq_cuda_wgmma: pdl must be 0..64 (0: off; P: L2 prefetch of P·stages blocks), got {self.pdl}"
            )
        if self.mc and (self.split != 1 or self.sk or not self.tma):
            raise ValueError(
                f"gptq_cuda_wgmma: mc (x multicast to a cluster of 2 column tiles) needs split=1, no sk and tma, got"
                f" split={self.split}, sk={self.sk}, tma={self.tma}"
            )
        if self.sred and (self.split == 1 or self.sk):
            raise ValueError(
                f"gptq_cuda_wgmma: sred (the st.async split-K sum) needs split > 1 and no sk, got {self.split}"
            )
        if self.sk and self.split != 1:
            raise ValueError(f"gptq_cuda_wgmma: sk (stream-K) needs split=1, got {self.split}")
        if self.ostage and (self.split != 1 or self.sk):
            raise ValueError(
                f"gptq_cuda_wgmma: ostage (staged output stores) needs split=1 and no sk, got split="
                f"{self.split}, sk={self.sk}"
            )
        if self.infl not in (2, 4, 8):
            raise ValueError(f"gptq_cuda_wgmma: infl (steps in flight) must be 2, 4 or 8, got {self.infl}")
        if not 2 <= self.stages <= 8:
            raise ValueError(f"gptq_cuda_wgmma: stages must be 2..8, got {self.stages}")
        if self.ncw not in (1, 2, 3) or self.minb not in (1, 2):
            raise ValueError(
                f"gptq_cuda_wgmma: ncw must be 1..3 and minb 1 or 2, got {self.ncw}, {self.minb}"
            )
        if self.tok // 2 + (40 if self.minb == 1 else 48) > self.compiled_regs():
            raise ValueError(
                f"gptq_cuda_wgmma: minb={self.minb} with ncw={self.ncw} leaves {self.compiled_regs()} registers a"
                f" thread: tok <= {2 * (self.compiled_regs() - (40 if self.minb == 1 else 48))}, got {self.tok}"
            )

    def compiled_regs(self) -> int:
        """The registers a thread ptxas gets under `__launch_bounds__(128·(ncw + 1), minb)`."""
        return min(255, 65536 // (self.minb * 128 * (self.ncw + 1))) // 8 * 8

    def regs(self) -> tuple[int, int]:
        """(producer, consumer) registers a thread after `setmaxnreg`, within the SM's 64K per `minb` CTAs."""
        threads = 128 * (self.ncw + 1)
        per = self.compiled_regs()
        prod = 40 if self.minb == 1 else 32  # 24 spilled the cluster sum and 8-bit meta copies (13th session)
        cons = min(240, (per * threads - prod * 128) // (128 * self.ncw) // 8 * 8)
        return prod, cons


def rswg_stage_bytes(spec: RswgSpec) -> int:
    """Bytes of one ring stage: x's block (TOK × 128 values), the strips' words (4 or 8 KB each) and meta."""
    wbytes = 32 * spec.bits * 32  # 128 rows x 64 columns at `bits` bits
    return (spec.tok * 256 + spec.ncw * (wbytes + META) + 1023) // 1024 * 1024  # 1024-byte aligned stages


def rswg_smem_bytes(spec: RswgSpec) -> int:
    """Dynamic shared memory of one CTA: 256 bytes of barriers (and a flag), then the ring (or, after the loop, split-K
    sums or staged outputs)."""
    staged = spec.split > 1 or spec.ostage  # the split-K sums, or the staged outputs, in fp32
    fin = spec.tok * (64 * spec.ncw + 4) * 4 if staged else 0
    return 256 + 1024 + max(spec.stages * rswg_stage_bytes(spec), fin)  # (+ the ring's alignment)
