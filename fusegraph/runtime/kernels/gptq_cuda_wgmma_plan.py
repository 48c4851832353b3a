"""The plan of the warp-specialized RS-wgmma GPTQ kernel (`gptq_cuda_wgmma_ws.py` launches it): the rows of x a CTA
takes, split-K or stream-K, the ring's depth, the strips a CTA, from the H200 benchmark (docs/benchmarks.md), and the
kernel instance (`RswgSpec`) of a plan."""

from __future__ import annotations

from typing import Any

from fusegraph.runtime.kernels.gptq_cuda_wgmma_spec import RswgSpec, rswg_smem_bytes

__all__ = ["RSWG_KEYS", "SMEM_MAX", "ring_stages", "rswg_plan", "rswg_spec", "rswg_tok"]

SMEM_MAX = 232448  # the opt-in dynamic shared memory of one CTA on sm_90 (227 KB)
RSWG_KEYS = (
    "split_k",
    "tok",
    "stages",
    "ncw",
    "minb",
    "vred",
    "sk",
    "ctas",
    "probe",
    "tma",
    "pdl",
    "sred",
    "mc",
    "infl",
    "ostage",
)  # what a config may set (overrides the plan)
_MIN_BLOCKS = 16  # split-K leaves a CTA at least this many 128-row blocks (half at tok ≤ 64): its fixed costs
_FIXED_BLOCKS = 4.0  # a CTA's cost outside its loop (ring fill, epilogue), in blocks of its loop
_REDUCE_BLOCKS = 4.0  # the split-K sum over a cluster
_SK_MIN_BLOCKS = 64  # stream-K where the tiles are few (≤ a quarter of the SMs) and K is at least this long


def rswg_tok(m: int, cap: int = 256) -> int:
    """The rows of x a CTA takes: M rounded up to 8 up to `cap`, else M spread evenly over ⌈M/cap⌉ tiles."""
    tiles = (m + cap - 1) // cap
    per = (m + tiles - 1) // tiles
    return max(8, (per + 7) // 8 * 8)


# Past 128 rows a tile (M > 128) the plan weighs M over tiles of at most 256, 192 and 128 rows (`_WIDE_CAPS`), and
# three strips a CTA where N/64 divides by 3 (`_THREE_STRIP_CAPS`), at split 1 and 2 by an estimate in µs fitted to
# the H200 benchmark (docs/benchmarks.md, fifth session): a 128-row block costs a two-strip CTA 0.25 + tok/256 µs
# (× `_two_stage(tok)` for a 2-stage ring: 8 bits past 176 rows), a CTA 2.6 µs more (ring fill, epilogue) and the
# cluster sum of split 2 0.8 + 2.1·tok/256 µs more; rounds of CTAs over the SMs. (Split 4 and stream-K lost at every
# M ≥ 256 cell: clusters of 4 a CTA an SM do not all fit at once; stream-K's fp32 parts.) A one-strip CTA (N/64 odd)
# is charged the two-strip block: never measured against three strips (N/64 odd and a multiple of 3).
_BLOCK_US, _CTA_US, _SUM_US = (0.25, 1.0), 2.6, (0.8, 2.1)
# The 192-row tiles: at M=768 they make 4 row tiles where 256 make 3 and 128 make 6. H200, 25th session, 8 bits,
# µs, split 1 at 192 rows / 256 / the plan then (128 rows): o_proj 39.8-40.1 / 48.3 / 55.5-56.7; gate_up 280.9-305.5
# / 322.5-327.8 / 364.2-367.2; down 126.0-146.2 / 162.7-164.4 / 186.2; qkv (split 2) 71.7-72.1 / 81.3-83.2 / 89.8-90.8.
_WIDE_CAPS = (256, 192, 128)


def _two_stage(tok: int) -> float:
    """What a 2-stage ring costs a block over a deeper one: 1.2 at 128 rows, falling to 1.0 at 256 (the dequantized
    words of a block overlap more tensor work the more rows a CTA takes). H200, 4 bits forced to 2 stages (25th
    session): 1.00x at 256 rows on gate_up M=512, 1.05x on down, 1.3x at 128 rows on qkv; 8 bits at 256 rows (the
    only 2-stage ring the plan builds) against 128 rows and 4 stages, µs: gate_up M=512 214.3-215.5 / 236.6-242.1, down
    (split 2) 86.2-96.0 / 116.4-119.8 (split 2; 112.1-114.5 at split 1), o_proj (split 2) 28.7-28.9 / 30.8-31.3."""
    return 1.0 + 0.2 * max(0.0, min(1.0, (256 - tok) / 128))


def ring_stages(tok: int, split: int, ncw: int, minb: int, bits: int, most: int = 4) -> int:
    """The deepest ring, 2..`most` stages, whose shared memory fits `minb` CTAs an SM."""
    stages = most
    while (
        stages > 2
        and minb * rswg_smem_bytes(RswgSpec(False, tok, split, True, stages, ncw, minb, bits=bits)) > SMEM_MAX
    ):
        stages -= 1
    return stages


def _wide_plan(m: int, n: int, k: int, sms: int, bits: int, ncw: int) -> tuple[int, int, int, int]:
    """(ncw, tok, split, stages) for tok > 128: the least estimate (above) over the tiles of `_WIDE_CAPS` rows at split 1
    or 2, and where N/64 divides by 3 over three strips a CTA (`_THREE_STRIP_CAPS`); a tie keeps two strips."""
    blocks = k // 128
    three = [(3, cap) for cap in _THREE_STRIP_CAPS] if (n // 64) % 3 == 0 else []
    shapes = [(ncw, cap) for cap in _WIDE_CAPS] + three
    best: tuple[float, int, int, int, int] | None = None
    for strips, cap in shapes:
        tok = rswg_tok(m, cap)
        for split in (1, 2) if blocks >= 2 else (1,):
            stages = ring_stages(tok, split, strips, 1, bits)
            ctas = -(-m // tok) * (n // (64 * strips)) * split
            block = (_BLOCK_US[0] + _BLOCK_US[1] * tok / 256) * (_two_stage(tok) if stages == 2 else 1.0)
            block *= _THREE_STRIP_BLOCK if strips == 3 else 1.0
            fixed = _CTA_US + ((_SUM_US[0] + _SUM_US[1] * tok / 256) if split > 1 else 0.0)
            est = -(-ctas // sms) * (blocks / split * block + fixed)
            if best is None or est < best[0]:
                best = (est, strips, tok, split, stages)
    assert best is not None
    return best[1], best[2], best[3], best[4]


# Three strips a CTA (ncw = 3, 512 threads, at most 176 rows: its registers) where N/64 divides by 3 (qkv's 96 strips:
# 32 column tiles), weighed by the estimate above with a block 1.5 times a two-strip CTA's (it does 3 strips' work for
# 2's). H200, seventh session: M=256 128 rows split 2 24.5 µs vs 26.2 (two strips, 96 CTAs); M=512 split 1 45.9 vs
# 50.5; M=1024 93.6 vs 93.3; four strips a CTA lost on every shape. 25th session, 8 bits (3 stages), three strips / the
# best two-strip variant: M=256 split 2 24.5-26.2 / 27.4-27.6; M=512 split 1 45.2-48.0 / 47.6-50.1; M=768 split 2
# 74.6-78.6 / 71.7-72.1 (192 rows; the estimate: 67 against 63). 26th session, 176-row tiles: M=640 (4 tiles of 160
# rows, 128 CTAs) split 1 52.1 µs at 8 bits against 59.4-63.4 for the two-strip plan (128 rows, 240 CTAs), 49.8 against
# 56.2 at 4 bits; M=768 (5 tiles) 100.2, M=1024 (6 tiles, split 2) 91.0 against 86.8-90.5 (256 rows split 2).
_THREE_STRIP_CAPS, _THREE_STRIP_BLOCK = (176, 128), 1.5


# Past 128 rows a tile, split 1: the outputs staged in shared memory and stored a row at a time (16-byte stores) instead
# of 2-byte stores from the fragments. H200, 11th session, µs, staged / not: gate_up M=256 99.5 / 103.8, M=512 203.5 /
# 210.6, M=1024 386.1 / 409.7; qkv M=512 (three strips) 41.4 / 45.9; o_proj M=1024 49.8 / 51.9; down M=1024 182.0 / 179.0;
# 8-bit qkv M=256 29.0 / 29.9. Not at M ≤ 128 (gate_up M=64 46.0 / 43.2). Alone, the stores of gate_up's M=64 outputs
# took 4.6 µs, staged 2.6 (the kernel without its blocks, "probe" 5).
_OSTAGE_MIN_M = 129
# One 64-column strip a CTA at split 2 (a cluster of 2), rules as data: (CTAs an SM, the range of M, the deepest ring)
# where those CTAs fit in one round of that many an SM. First, one CTA an SM with a 6-stage ring to M = 128 (o_proj,
# down: 64 strips, 128 CTAs; `_ONE_STRIP_MAX_M` in the sessions' notes). The two-strip plan takes split 4 (o_proj) or stream-K (down)
# there, and a cluster's split-K sum costs about 1-1.5 µs a CTA of the cluster (the kernel without its blocks: split 1
# 2.3 µs, staged 1.8, 2 3.8, 4 5.1, 8 9.3-11.7). H200, 11th session, µs, one strip / the two-strip plan: o_proj M=32 9.04 / 11.47,
# M=64 9.29 / 13.70, M=128 11.10 / 15.36; down M=32 22.95 / 25.31, M=64 23.85 / 30.47, M=128 28.72 / 39.05; 8 bits
# (5 stages fit at 128 rows): o_proj M=32 9.92 / 12.58, M=64 10.77 / 14.78, M=128 12.98 / 16.00; down M=32 24.67 /
# 28.51, M=64 26.88 / 33.93, M=128 35.20 / 39.06. (qkv, 96 strips: two CTAs an SM, M=64 1.09x, M=32 0.96x, M=128 0.77x;
# gate_up slower at every M: not there.)
# Then two CTAs an SM (4 stages) at M = 41..64 (tok 48..64; `_ONE_STRIP_M2` in the notes): qkv (96 strips, 192 CTAs;
# the two-strip plan takes split 4). H200, 12th session, µs, the default
# dispatch (chained) with the old plan / this one: 4 bits M=48 12.79 / 11.68, M=64 13.84 / 11.73; forced, unchained,
# the old plan / this one: 4 bits M=48 12.92 / 12.72, M=56 13.31 / 13.39, M=64 14.00 / 12.99; 8 bits M=48 18.35 /
# 14.39, M=56 18.83 / 15.10, M=64 19.23 / 14.40. Not at M=32 (11.95 / 11.97), 80 (13.57 / 13.16 at split 2) or 96
# (18.73 / 14.60). bf16 takes it too, not timed.
_ONE_STRIP: tuple[tuple[int, tuple[int, int], int], ...] = ((1, (1, 128), 6), (2, (41, 64), 4))
# Before the one-strip plan, to this tok (M ≤ 32): two-strip CTAs two an SM at the largest split s ≤ 7 (a cluster;
# 8 was 1.3x slower) that leaves each CTA `_MIN_BLOCKS` blocks, where those CTAs are at least `_TWO_STRIP_MIN_FILL`
# SMs' worth (down: 224 CTAs at split 7; o_proj's 32 blocks allow split 2, 64 CTAs: not there). H200, 16th session,
# down, µs, split 7 / the one-strip plan: M=17 17.86 / 20.05, M=24 18.34 / 20.24, M=32 19.54 / 20.57; bf16 M=24
# 19.11 / 20.61; 8 bits M=24 21.98 / 22.46. Not at M=48 (20.60-21.68 / 21.17) or 64 (23.22 / 22.21), nor at M=16 against
# the mid-M kernel (17.02 / 16.57).
_TWO_STRIP_MAX_TOK, _TWO_STRIP_MAX_SPLIT, _TWO_STRIP_MIN_FILL = 32, 7, 1.5


def _two_strip_fill_plan(tok: int, n: int, k: int, sms: int, bits: int) -> dict[str, Any] | None:
    """Two-strip CTAs two an SM at a split that fills the SMs, in place of the one-strip plan (`_TWO_STRIP_MAX_TOK`),
    or None where no split ≤ `_TWO_STRIP_MAX_SPLIT` leaves `_MIN_BLOCKS` blocks a CTA and fills them."""
    blocks, tiles = k // 128, n // 128
    if tok > _TWO_STRIP_MAX_TOK or (n // 64) % 2:
        return None
    splits = [s for s in range(1, _TWO_STRIP_MAX_SPLIT + 1) if blocks % s == 0 and blocks // s >= _MIN_BLOCKS]
    split = max((s for s in splits if tiles * s <= 2 * sms), default=0)
    if not split or tiles * split < _TWO_STRIP_MIN_FILL * sms:
        return None
    return {"split_k": split, "tok": tok, "stages": ring_stages(tok, split, 2, 2, bits), "ncw": 2, "minb": 2, "tma": 1,
            "sk": 0, "vred": int(split > 1), "pdl": 0, "ostage": 0}  # fmt: skip


def rswg_plan(m: int, n: int, k: int, sms: int, bits: int = 4) -> dict[str, Any] | None:
    """{"split_k", "tok", "stages", "ncw", "minb", "tma", "sk", "vred", "pdl", "ostage"} for x `[m, k]` · W `[k, n]`, or
    None when the kernel cannot take it.

    tok = `rswg_tok(m)`; two strips a CTA (one where N/64 is odd); two CTAs an SM at tok ≤ 64; x by the
    copy engine. Past tok = 128: tiles of at most 256, 192 or 128 rows at split 1 or 2, or three strips a CTA of at
    most 176 or 128 rows where N/64 divides by 3 (qkv), by the estimate above `_wide_plan`; at split 1 the outputs
    staged in shared memory ("ostage", `_OSTAGE_MIN_M`).
    One-strip CTAs at split 2 where they fit in one round (`_ONE_STRIP`): one an SM to 128 rows with the deepest ring
    to 6 stages (o_proj, down), two an SM at 41..64 rows with 4 (qkv); but to 32 rows two-strip CTAs two an SM at a
    split ≤ 7 where they fill the SMs (`_two_strip_fill_plan`: down at split 7).
    Else split-K: of the s ≤ 8 that leave each CTA at least `_MIN_BLOCKS` blocks (16; 8 at tok ≤ 64),
    the least ⌈tiles·s / (SMs·minb)⌉ · (blocks/s + `_FIXED_BLOCKS`) + `_REDUCE_BLOCKS` (s > 1), its
    cluster sum 4 floats a load ("vred"); stream-K instead where the tiles are at most a quarter of the
    SMs and K has at least `_SK_MIN_BLOCKS` blocks. The deepest ring (≤ 4 stages) that fits (8-bit: its
    words are twice the bytes). "pdl" 0 (a caller sets P ≥ 1 to launch it as a programmatic dependent
    launch that first asks L2 for P·stages weight blocks a strip).
    (From the H200 benchmark of the four Llama-3-8B shapes at M = 64..1024, docs/benchmarks.md.)

    Example:
        >>> rswg_plan(256, 28672, 4096, 132)
        {'split_k': 1, 'tok': 256, 'stages': 3, 'ncw': 2, 'minb': 1, 'tma': 1, 'sk': 0, 'vred': 0, 'pdl': 0, 'ostage': 1}
        >>> rswg_plan(64, 4096, 4096, 132)["ncw"], rswg_plan(64, 4096, 4096, 132)["split_k"]  # o_proj: 128 CTAs
        (1, 2)
        >>> rswg_plan(64, 6144, 4096, 132)["minb"], rswg_plan(64, 6144, 4096, 132)["ncw"]  # qkv: 192 CTAs, 2 an SM
        (2, 1)
        >>> rswg_plan(256, 6144, 4096, 132)["ncw"]  # qkv: 3 strips a CTA, 128 CTAs
        3
    """
    if m < 1 or n % 64 or k % 128 or bits not in (4, 8):
        return None
    tok = rswg_tok(m)
    ncw = 2 if (n // 64) % 2 == 0 else 1
    if tok > 128:
        ncw, tok, split, stages = _wide_plan(m, n, k, sms, bits, ncw)
        return {"split_k": split, "tok": tok, "stages": stages, "ncw": ncw, "minb": 1, "tma": 1, "sk": 0,
                "vred": int(split > 1), "pdl": 0, "ostage": int(split == 1 and m >= _OSTAGE_MIN_M)}  # fmt: skip
    for per_sm, (lo, hi), most in _ONE_STRIP:
        if lo <= m <= hi and (n // 64) * 2 <= per_sm * sms and k // 128 >= 2 * _MIN_BLOCKS:
            if two := _two_strip_fill_plan(tok, n, k, sms, bits):
                return two
            return {"split_k": 2, "tok": tok, "stages": ring_stages(tok, 2, 1, per_sm, bits, most), "ncw": 1,
                    "minb": per_sm, "tma": 1, "sk": 0, "vred": 1, "pdl": 0, "ostage": 0}  # fmt: skip
    minb = 2 if tok <= 64 else 1
    tiles = ((m + tok - 1) // tok) * (n // (64 * ncw))
    blocks = k // 128
    min_blocks = _MIN_BLOCKS // 2 if tok <= 64 else _MIN_BLOCKS
    slots = sms * minb

    def cost(
        s: int,
    ) -> float:  # rounds of CTAs x (blocks a CTA + its fixed cost) + the split-K sum, in blocks
        return -(-tiles * s // slots) * (blocks / s + _FIXED_BLOCKS) + (_REDUCE_BLOCKS if s > 1 else 0.0)

    fits = [s for s in range(1, min(8, blocks) + 1) if blocks // s >= min_blocks] or [1]
    split = min(fits, key=lambda s: (cost(s), s))
    sk = int(4 * tiles <= sms and blocks >= _SK_MIN_BLOCKS)
    if sk:
        split = 1
    stages = ring_stages(tok, split, ncw, minb, bits)
    vred = int(split > 1)
    return {
        "split_k": split,
        "tok": tok,
        "stages": stages,
        "ncw": ncw,
        "minb": minb,
        "tma": 1,
        "sk": sk,
        "vred": vred,
        "pdl": 0,
        "ostage": 0,
    }


def rswg_spec(plan: dict[str, Any], *, bf16: bool, zero_v1: bool, bits: int = 4) -> RswgSpec:
    """The kernel instance of a plan (`rswg_plan`'s keys; "vred", "sk", "probe", "tma", "pdl" optional).

    Example:
        >>> rswg_spec(rswg_plan(256, 4096, 4096, 132), bf16=False, zero_v1=True).tok  # 128 rows, split 2
        128
    """
    return RswgSpec(bf16=bf16, tok=int(plan["tok"]), split=int(plan["split_k"]), zero_v1=zero_v1,
                    stages=int(plan["stages"]), ncw=int(plan["ncw"]), minb=int(plan["minb"]),
                    vred=bool(plan.get("vred", False)),
                    sk=bool(plan.get("sk", False)), probe=int(plan.get("probe", 0)),
                    tma=bool(plan.get("tma", False)), bits=bits, pdl=int(plan.get("pdl", 0)),
                    sred=bool(plan.get("sred", False)), mc=bool(plan.get("mc", False)),
                    infl=int(plan.get("infl", 2)), ostage=bool(plan.get("ostage", False)))  # fmt: skip
