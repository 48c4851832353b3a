"""The GPTQ custom dispatches of `iree_dispatch`: `fg.qmatmul.gptq` as `_gptq_matmul_kernel` (the
kernel our eager path runs at M = 17..32) with split-K, then a reduction into the output.

`qmatmul_gptq_pieces` is the same op when its weights are concatenations of several weights
along N (what `fuse-qkv-projections` leaves: `cat(q, k, v)` of the three projections' tensors,
which the eager runtime folds at compile time but an IREE module would copy on every call):
one matmul per piece on the piece's own tensors, each reduced into its columns of the output
(`kernels/iree_dispatch_reduce.py`), so the concatenation never runs.

Example:
    >>> emitted = qmatmul_gptq(op, "fg_qmatmul_gptq_0", DispatchOptions())
"""

from __future__ import annotations

from dataclasses import dataclass

from fusegraph.runtime.iree_dispatch_body import (
    Body,
    Value,
    as_float,
    as_int,
    cdiv,
    grid,
    kernel_ptx,
    pow2,
    ptr,
)
from fusegraph.runtime.iree_dispatch_ir import (
    DispatchOptions,
    DispatchUnsupportedError,
    Emitted,
    Launch,
    Operator,
    TensorArg,
    builtin_type,
)
from fusegraph.runtime.iree_dispatch_ptx import KernelPTX
from fusegraph.runtime.kernels.gptq_kernels import _gptq_matmul_kernel, _splitk_reduce_kernel
from fusegraph.runtime.kernels.iree_dispatch_reduce import _reduce_into_columns_kernel

__all__ = ["qmatmul_gptq", "qmatmul_gptq_pieces"]


@dataclass(frozen=True)
class _Tiles:
    block_m: int
    block_n: int
    block_k: int
    split: int
    k_per_split: int


def _tiles(n: int, k: int, group_size: int, opts: DispatchOptions, min_split: int = 1) -> _Tiles:
    """The tiles eager's `pick_config` takes for the general kernel at M = `opts.design_m`, with
    split-K filling `opts.sms` SMs (at least `min_split` slices)."""
    block_m = 16 if opts.design_m <= 16 else 32 if opts.design_m <= 32 else 64
    block_n = 128 if n >= 128 else max(16, pow2(n))
    block_k = 128 if group_size % 128 == 0 or group_size >= k else 64 if group_size % 64 == 0 else 32
    tiles = cdiv(opts.design_m, block_m) * cdiv(n, block_n)
    split = max(1, min(2 * opts.sms // tiles, k // block_k, 16)) if tiles < opts.sms else 1
    split = min(max(split, min_split), max(1, k // block_k))
    k_per_split = cdiv(cdiv(k, split), block_k) * block_k
    return _Tiles(block_m, block_n, block_k, cdiv(k, k_per_split), k_per_split)


def _attributes(op: Operator) -> tuple[int, int, str, float | None]:
    """(bits, group_size, zero_format, clip) of a GPTQ operator; refuses what has no dispatch."""
    g_idx, bits, group_size, _sym, zero_format, clip = op.args[-6:]
    if isinstance(g_idx, TensorArg) or bits not in (2, 4, 8):
        raise DispatchUnsupportedError(
            "iree_dispatch: qmatmul_gptq: only 2/4/8 bits with qzeros and no act-order g_idx have a custom dispatch"
        )
    clip_value = None if clip is None else as_float(clip, op.op, "clip")
    return as_int(bits, op.op, "bits"), as_int(group_size, op.op, "group_size"), str(zero_format), clip_value


def _matmul(body: Body, name: str, op: Operator, piece: tuple[int, int, int], k: int, min_split: int,
            opts: DispatchOptions) -> tuple[Value, _Tiles, bool]:  # fmt: skip
    """The matmul dispatch of x (operand 0) by the piece's (qweight, scales, qzeros) operands:
    (its result, its tiles, whether the result is the workspace `[split, M, N]` (else the output))."""
    bits, group_size, zero_format, clip = _attributes(op)
    x, qw, scales, qz = (op.tensors[i] for i in (0, *piece))
    n = qw.dims[1]
    if n is None or qz.dims[1] is None:
        raise DispatchUnsupportedError(f"iree_dispatch: qmatmul_gptq: N must be static, got {qw.dims}")
    gs = k if group_size == -1 else group_size
    t = _tiles(n, k, gs, opts, min_split)
    const = {"gidx_ptr": None, "N": n, "K": k, "group_size": gs, "k_per_split": t.k_per_split,
             "clip": 0.0 if clip is None else clip, "stride_xm": k, "stride_xk": 1, "stride_qw": n,
             "stride_s": n, "stride_qz": qz.dims[1], "stride_om": n, "BITS": bits, "HAS_ZEROS": True,
             "ZERO_V1": zero_format == "v1", "HAS_GIDX": False,
             "GROUP_PER_TILE": gs % t.block_k == 0 and t.k_per_split % t.block_k == 0, "HAS_CLIP": clip is not None,
             "SPLIT_K": t.split, "BLOCK_M": t.block_m, "BLOCK_N": t.block_n, "BLOCK_K": t.block_k,
             "DOT_PRECISION": "ieee" if x.dtype == "f32" else "tf32", "DOT_FP32": False}  # fmt: skip
    dyn = {"x_ptr": ptr(x), "qw_ptr": "*i32", "scales_ptr": ptr(scales), "qz_ptr": "*i32", "out_ptr": ptr(x),
           "ws_ptr": "*fp32", "M": "i32"}  # fmt: skip
    kernel = kernel_ptx(_gptq_matmul_kernel, dyn, const, opts, num_warps=4 if t.block_m <= 32 else 8)
    m = body.dim(0, 0)
    counts = grid("%gn", "%gm", t.split, (f"%gn = arith.constant {cdiv(n, t.block_n)} : index",
                                          f"%bm = arith.constant {t.block_m} : index",
                                          "%gm = arith.ceildivui %m, %bm : index"))  # fmt: skip
    operands = {
        arg: body.operand(i) for arg, i in zip(("x_ptr", "qw_ptr", "scales_ptr", "qz_ptr"), (0, *piece))
    }
    if t.split == 1:
        launch = Launch(kernel, ["%m"], counts, frozenset({"out_ptr"}))
        out_type = builtin_type([None, n], x.dtype)
        (out,) = body.dispatch(name, launch, [m], {"M": m}, operands, {"out_ptr": ("", out_type, [m])})
        return out, t, False
    launch = Launch(kernel, ["%m"], counts, frozenset({"ws_ptr"}))
    ws_type = f"tensor<{t.split}x?x{n}xf32>"
    (ws,) = body.dispatch(name, launch, [m], {"M": m}, operands, {"ws_ptr": ("", ws_type, [m])})
    return ws, t, True


def _reduce_launch(kernel: KernelPTX, block: int) -> Launch:
    counts = grid(
        "%x", 1, 1, (f"%bs = arith.constant {block} : index", "%x = arith.ceildivui %e, %bs : index")
    )
    return Launch(kernel, ["%e"], counts, frozenset({"out_ptr"}))


def qmatmul_gptq(op: Operator, fname: str, opts: DispatchOptions) -> Emitted:
    """`fg.qmatmul.gptq` -> `_gptq_matmul_kernel` (split-K for `opts.sms`), `_splitk_reduce_kernel`."""
    x = op.tensors[0]
    if len(op.tensors) != 4 or x.dims[1] is None:
        raise DispatchUnsupportedError(
            f"iree_dispatch: qmatmul_gptq: needs qzeros and a static K, got {x.dims}"
        )
    body = Body(op)
    body.nonempty(0)
    ws, t, split = _matmul(body, f"{fname}_k0", op, (1, 2, 3), x.dims[1], 1, opts)
    if not split:
        return body.finish([ws])
    n = op.tensors[1].dims[1]
    assert n is not None  # _matmul checked it
    m = body.dim(0, 0)
    block = 256 if opts.design_m * n >= 512 * opts.sms else 64
    reduce = kernel_ptx(_splitk_reduce_kernel, {"ws_ptr": "*fp32", "out_ptr": ptr(x), "numel": "i32"},
                        {"SPLIT_K": t.split, "BLOCK": block}, opts, num_warps=4, num_stages=1)  # fmt: skip
    numel = body.arith("muli", m, body.index(n))
    out_type = builtin_type([None, n], x.dtype)
    (out,) = body.dispatch(f"{fname}_k1", _reduce_launch(reduce, block), [numel], {"numel": numel},
                           {"ws_ptr": ws}, {"out_ptr": ("", out_type, [m])})  # fmt: skip
    return body.finish([out])


def qmatmul_gptq_pieces(op: Operator, fname: str, opts: DispatchOptions) -> Emitted:
    """`fg.qmatmul.gptq` whose (qweight, scales, qzeros) are each the concatenation along N of the
    same pieces: operands `x, qw_1, s_1, qz_1, ..., qw_p, s_p, qz_p` (`iree_dispatch` matches
    the `torch.aten.cat`s). Per piece: the matmul into a workspace (at least 2 K slices), then
    `_reduce_into_columns_kernel` into its columns of the one output."""
    x = op.tensors[0]
    k = x.dims[1]
    pieces = (len(op.tensors) - 1) // 3
    if k is None or len(op.tensors) != 1 + 3 * pieces or pieces < 2:
        raise DispatchUnsupportedError(f"iree_dispatch: qmatmul_gptq: bad piece operands {len(op.tensors)}")
    n_out = op.results[0][0][1]
    widths = [op.tensors[1 + 3 * p].dims[1] for p in range(pieces)]
    if n_out is None or any(w is None for w in widths) or sum(w or 0 for w in widths) != n_out:
        raise DispatchUnsupportedError(
            f"iree_dispatch: qmatmul_gptq: pieces {widths} do not make N = {n_out}"
        )
    body = Body(op)
    body.nonempty(0)
    m = body.dim(0, 0)
    out: Value | None = None
    col0 = 0
    for p, width in enumerate(w or 0 for w in widths):
        ws, t, split = _matmul(body, f"{fname}_k{2 * p}", op, (1 + 3 * p, 2 + 3 * p, 3 + 3 * p), k, 2, opts)
        if not split:
            raise DispatchUnsupportedError(
                f"iree_dispatch: qmatmul_gptq: K = {k} is too short to split per piece"
            )
        block = 256 if opts.design_m * width >= 512 * opts.sms else 64
        consts = {"N_PIECE": width, "N_OUT": n_out, "COL0": col0, "SPLIT_K": t.split, "BLOCK": block}
        reduce = kernel_ptx(_reduce_into_columns_kernel, {"ws_ptr": "*fp32", "out_ptr": ptr(x), "M": "i32"},
                            consts, opts, num_warps=4, num_stages=1)  # fmt: skip
        numel = body.arith("muli", m, body.index(width))
        operands = {"ws_ptr": ws}
        if out is None:  # the first piece's reduction makes the output; the others write into it
            results: dict[str, Value | str] = {"out_ptr": ("", builtin_type([None, n_out], x.dtype), [m])}
        else:
            operands["out_ptr"] = out
            results = {"out_ptr": "out_ptr"}
        (out,) = body.dispatch(f"{fname}_k{2 * p + 1}", _reduce_launch(reduce, block), [numel], {"M": m},
                               operands, results)  # fmt: skip
        col0 += width
    assert out is not None
    return body.finish([out])
