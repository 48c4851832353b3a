"""The inline PTX of the tiled GPTQ kernels (`gptq_tiled_kernels.py`), as strings.

`lop3.b32 d, w >> 4j, 0x000f000f, magic, 0xea` = (w >> 4j & 0x000f000f) | magic turns nibbles j
and j + 4 of a word into the fp16 (magic 0x6400 = 1024) or bf16 (0x4300 = 128) pair
`(magic + q_j, magic + q_{j+4})`; `prmt` does the same for bytes (0, 2) and (1, 3) of an 8-bit
word (fp16 only: bf16 cannot hold 128 + 255). A packed subtract of `magic + z` then gives
`q − z` exactly. `DOT*` multiplies the pairs by packed x pairs and returns the fp32 sum of the
word's products; `DQ*` returns the P values `q − z` for `tl.dot`.
"""

from __future__ import annotations

_LUT = "0xea"  # lop3: (a & b) | c

# Ask L2 for the 128-byte line at $1 (no L1 allocation, no register written but the dummy $0).
PREFETCH_L2 = "prefetch.global.L2 [$1]; mov.u32 $0, 0;"


def _shifted_lop3(src: str, shift: int, dst: str, magic: str) -> str:
    if shift == 0:
        return f"lop3.b32 {dst}, {src}, 0x000f000f, {magic}, {_LUT};"
    return f"shr.u32 sh, {src}, {shift}; lop3.b32 {dst}, sh, 0x000f000f, {magic}, {_LUT};"


def _unpack4(src: str, ty: str) -> str:
    """t0..t3 = (q_j - z, q_{j+4} - z) for j = 0..3, as packed pairs; mz in `mz`."""
    magic = "0x64006400" if ty == "f16" else "0x43004300"
    body = " ".join(_shifted_lop3(src, 4 * j, f"t{j}", magic) for j in range(4))
    subs = " ".join(f"sub.{ty}x2 t{j}, t{j}, mz;" for j in range(4))
    return body + " " + subs


def _unpack8(src: str, ty: str) -> str:
    """t0 = (q0 - z, q2 - z), t1 = (q1 - z, q3 - z); fp16 only (bf16 cannot hold 128 + 255)."""
    return (f"mov.b32 mg, 0x64646464; prmt.b32 t0, {src}, mg, 0x4240; prmt.b32 t1, {src}, mg, 0x4341; "
            f"sub.{ty}x2 t0, t0, mz; sub.{ty}x2 t1, t1, mz;")  # fmt: skip


def _dot_asm_text(cb: int, ty: str) -> str:
    """$0 (f32) = Σ_i x_i·(q_i − z) over one word; $1 = word, $2.. = packed x pairs, last = mz."""
    if cb == 4:
        unpack, pairs = _unpack4("$1", ty), 4
    else:
        unpack, pairs = _unpack8("$1", ty), 2
    mz = f"${2 + pairs}"
    prods = f"mul.{'rn.' if ty == 'bf16' else ''}{ty}x2 acc, t0, $2; " + " ".join(
        f"fma.rn.{ty}x2 acc, t{j}, ${2 + j}, acc;" for j in range(1, pairs)
    )
    return (
        "{ .reg .b32 t0, t1, t2, t3, sh, mg, mz, acc; .reg .b16 lo, hi; .reg .f32 fl, fh; "
        f"mov.b32 mz, {mz}; {unpack} {prods} mov.b32 {{lo, hi}}, acc; "
        f"cvt.f32.{ty} fl, lo; cvt.f32.{ty} fh, hi; add.f32 $0, fl, fh; }}"
    )


def _dq_asm_text(cb: int, ty: str) -> str:
    """$0..$(P-1) = q_i − z in fp16/bf16 for the P values of word $P; mz is $(P+1)."""
    p = 32 // cb
    if cb == 4:
        unpack = _unpack4(f"${p}", ty)
        outs = " ".join(f"mov.b32 {{${j}, ${j + 4}}}, t{j};" for j in range(4))
    else:
        unpack = _unpack8(f"${p}", ty)
        outs = "mov.b32 {$0, $2}, t0; mov.b32 {$1, $3}, t1;"
    return f"{{ .reg .b32 t0, t1, t2, t3, sh, mg, mz; mov.b32 mz, ${p + 1}; {unpack} {outs} }}"


def dot_asm(cb: int, ty: str) -> str:
    """The GEMV's asm: $0 (f32) = Σ_i x_i·(q_i − z) over one word (see `_dot_asm_text`)."""
    return _dot_asm_text(cb, ty)


def dq_asm(cb: int, ty: str) -> str:
    """The tensor-core path's asm: the P values q_i − z of one word (see `_dq_asm_text`)."""
    return _dq_asm_text(cb, ty)
